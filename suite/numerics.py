"""Pinned CPU numerics: one vector code path on every x86-64 CPU, fixed before torch loads.

ATen, MKL and oneDNN pick their vector code paths per CPU (AVX2, AVX-512...), so the same
program rounds differently on two servers, and chaotic training amplifies the difference
(one He-ReLU run ended at loss 0.644, 0.0054 or 0.0012 depending only on the code path).
vanex therefore fixes all three to AVX2, which every current x86-64 server has:
``ATEN_CPU_CAPABILITY=avx2``, MKL's conditional numerical reproducibility
``MKL_CBWR=AVX2,STRICT`` and oneDNN's ``ONEDNN_MAX_CPU_ISA=AVX2``. These variables are read
once, when torch first dispatches, so :func:`apply` must run before torch is imported;
importing :mod:`vanex` does that. ``numerics=native`` (on the command line, or
``VANEX_NUMERICS=native``) leaves the code paths to the CPU and the inherited
environment; it is part of a run's identity. This module must not import torch.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from vanex.errors import UserError

MODES = ("pinned", "generic", "native")  # pinned: AVX2 everywhere; generic: the scalar second path; native: the CPU's
MODE_ENV = "VANEX_NUMERICS"  # carries the mode to worker processes
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
FALLBACK = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}
_INHERITED = {k: os.environ.get(k) for k in PINNED}  # what the environment said before vanex touched it


def cpuinfo(field: str) -> str | None:
    """A field of the first CPU in /proc/cpuinfo ("flags", "model name"), or None where unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The instruction-set flags of the CPU (empty where unknown)."""
    return set((cpuinfo("flags") or "").split())


def has_avx2() -> bool:
    return {"avx2", "fma"} <= cpu_flags()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def apply(mode: str) -> None:
    """Set (``pinned``) or restore (``native``) the code-path variables for this process and its workers."""
    if mode not in MODES:
        raise UserError(f"numerics '{mode}' is not one of {', '.join(MODES)}")
    if "torch" in sys.modules and mode != active_mode():
        raise UserError(
            f"numerics={mode} must be chosen before torch is imported: give it on the vanex command line "
            f"or set {MODE_ENV}={mode}"
        )
    os.environ[MODE_ENV] = mode
    if mode == "generic":
        chosen = FALLBACK  # ATen's generic kernels, MKL's compatible path: rounds as another CPU may
    elif mode == "pinned" and is_x86():
        chosen = PINNED if has_avx2() else FALLBACK
    else:
        chosen = _INHERITED
    for key, value in chosen.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def active_mode() -> str:
    return os.environ.get(MODE_ENV, "pinned")


def warning(aten_capability: str) -> str | None:
    """One line for a run whose numerics cannot match the reference machines, else None."""
    if active_mode() == "native":
        return "numerics=native: CPU code paths follow this CPU; numbers may differ on other machines"
    if not is_x86():
        return f"numerics: {platform.machine()} is not x86-64; code paths are not pinned, numbers may differ"
    if not has_avx2():
        return "numerics: this CPU lacks AVX2; pinned to the generic code path, numbers may differ from AVX2 machines"
    if aten_capability != "AVX2":
        return f"numerics: torch was imported before vanex and runs {aten_capability} code; import vanex first"
    return None


def provenance() -> dict[str, object]:
    """The effective settings, for a record (call after torch has loaded)."""
    import torch

    flags, capability = cpu_flags(), torch.backends.cpu.get_cpu_capability()
    return {
        "mode": active_mode(),
        "env": {k: os.environ.get(k) for k in PINNED},
        "aten_cpu_capability": capability,
        "cpu_isa_flags": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx"))),
        "mkl": torch.backends.mkl.is_available(),
        "warning": warning(capability),
    }
