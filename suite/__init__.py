"""gradbench: a reproducible benchmark suite for vanishing and exploding gradients.

The engine lives here (registry, run loop, probes, records, reporter); tasks live in the
sibling package ``tasks``; Hydra configs ship inside this package as ``suite.conf``.
Importing this package pins the CPU code paths (``suite.numerics``) unless torch is already
loaded, so it must be imported before torch; it imports nothing heavy itself.
"""

import sys as _sys

from suite import numerics as _numerics

__version__ = "0.2.0"

if "torch" not in _sys.modules:
    _numerics.apply(_numerics.active_mode())
