"""Shared building blocks for task models: activations, normalisation layers, init schemes.

Initialisations cite their papers: Glorot & Bengio (2010) for ``xavier``, He et al. (2015)
for ``he``, Saxe et al. (2014) for ``orthogonal``, Radford et al. (2019, GPT-2) for
``small`` (normal, std 0.02). ``default`` keeps PyTorch's own initialisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "gelu": F.gelu,
    "silu": F.silu,
    "identity": lambda x: x,
}
SATURATING = ("sigmoid", "tanh")  # probes report the saturated fraction for these
RECTIFIERS = ("relu", "leaky_relu", "gelu", "silu")  # probes report the dead fraction for these
NORMS = ("none", "batchnorm", "layernorm")
INITS = ("default", "xavier", "he", "orthogonal", "small")


def check_choice(what: str, value: str, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{what} '{value}' is not one of {', '.join(valid)}")


class Activation(nn.Module):
    """An elementwise nonlinearity that knows its own name (read by the activation probe).

    With ``observe_only`` it passes its input through unchanged: a marker for a tensor that some
    fused kernel (e.g. nn.RNN) already put through ``kind``, so the probe can still see it."""

    def __init__(self, kind: str, observe_only: bool = False) -> None:
        super().__init__()
        check_choice("activation", kind, ACTIVATIONS)
        self.kind = kind
        self.fn = ACTIVATIONS["identity" if observe_only else kind]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.kind


def make_norm(kind: str, width: int) -> nn.Module:
    """Feature normalisation for (B, width) inputs: Ioffe & Szegedy (2015); Ba et al. (2016)."""
    check_choice("norm", kind, NORMS)
    if kind == "batchnorm":
        return nn.BatchNorm1d(width)
    if kind == "layernorm":
        return nn.LayerNorm(width)
    return nn.Identity()


def init_weight(weight: torch.Tensor, scheme: str) -> None:
    """Initialise one weight matrix (out, in, ...) in place under ``scheme``."""
    check_choice("init", scheme, INITS)
    with torch.no_grad():
        if scheme == "xavier":
            nn.init.xavier_normal_(weight)
        elif scheme == "he":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
        elif scheme == "orthogonal":
            nn.init.orthogonal_(weight)
        elif scheme == "small":
            nn.init.normal_(weight, std=0.02)


def init_linear_stack(modules: Iterable[nn.Module], scheme: str) -> None:
    """Apply ``scheme`` to every Linear/Conv weight in ``modules``; zero their biases."""
    if scheme == "default":
        return
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                init_weight(m.weight, scheme)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
