"""Training: config composition, the run loop, probes, studies and their launchers, leases and
provenance. The only layer that imports torch; it never imports the report."""
