"""Hypothesis strategies with bounded shapes, shared by the property tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

widths = st.integers(min_value=64, max_value=256)
depths = st.integers(min_value=2, max_value=12)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
shapes = st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=3).map(tuple)
scales = st.floats(min_value=1e-3, max_value=1e3)
bounds = st.floats(min_value=1e-3, max_value=10.0)


@st.composite
def gradient_sets(draw) -> list[torch.Tensor]:
    """A few gradient tensors of drawn shapes, scale and seed (float64, finite)."""
    seed, scale = draw(seeds), draw(scales)
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=g, dtype=torch.float64) * scale
        for shape in draw(st.lists(shapes, min_size=1, max_size=4))
    ]
