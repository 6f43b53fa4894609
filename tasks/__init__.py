"""Built-in tasks (``vanex.tasks``), one module each, registered through the ``vanex.plugins``
entry-point group like any plugin's; ``<task>_report`` modules hold their torch-free report sections."""
