"""gradbench: a reproducible benchmark suite for vanishing and exploding gradients.

The engine lives here (registry, run loop, probes, records, reporter); tasks live in the
sibling package ``tasks``; Hydra configs ship inside this package as ``suite.conf``.
"""

__version__ = "0.1.0"
