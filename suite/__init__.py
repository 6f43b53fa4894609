"""vanex: a reproducible benchmark suite for vanishing and exploding gradients.

The package is built in layers; an arrow only ever points down (``tests/test_structure.py``):

- ``vanex.errors``, ``vanex.registry``, ``vanex.numerics``: the foundation (no torch);
- ``vanex.science``: the mathematics (diagnosis, mean field, statistics), torch-free and file-free;
- ``vanex.records``: the contract between training and reporting (writing and reading records and
  study manifests), torch-free;
- ``vanex.engine``: training (config, runner, probes, studies, leases, provenance), the only layer
  that imports torch; ``vanex.report``: tables, figures, HTML, claims, compare, torch-free.
  Neither imports the other;
- plugins on top: ``vanex.tasks`` (the repository's ``tasks/``), ``vanex.mitigations``, and any
  third party's, all registered through entry points; ``vanex.cli`` ties the command together.

Hydra configs ship as ``vanex.conf`` (the repository's ``conf/``). Importing this package pins the
CPU code paths (``vanex.numerics``) unless torch is already loaded, so import it before torch.
"""

import sys as _sys

from vanex import numerics as _numerics

__version__ = "0.3.0"

if "torch" not in _sys.modules and _numerics.active_mode() in _numerics.MODES:  # a bad VANEX_NUMERICS: the CLI says so
    _numerics.apply(_numerics.active_mode())
