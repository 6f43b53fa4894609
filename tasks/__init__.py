"""Built-in tasks, one module each. Every task registers itself with ``suite.registry.TASKS``."""
