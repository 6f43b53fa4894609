"""Built-in mitigations, one module per hook family."""
