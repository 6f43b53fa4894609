"""vanex plugin: adaptive gradient clipping (Brock, De, Smith & Simonyan 2021, NFNets), with the probe
its rule reads, a published claim and a report section."""


def register() -> None:
    """Entry point of the ``vanex.plugins`` group: importing the modules registers ``agc`` and its probe."""
    from vanex_agc import agc, probe  # noqa: F401
