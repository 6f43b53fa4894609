"""gradbench plugin: adaptive gradient clipping (Brock, De, Smith & Simonyan 2021, NFNets)."""


def register() -> None:
    """Entry point of the ``gradbench.plugins`` group: importing the module registers ``agc``."""
    from gradbench_agc import agc  # noqa: F401
