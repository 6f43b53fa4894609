"""Residual-branch schemes and recurrent initialisations, written once and composed by tasks.

A residual block computes a branch F(x) and combines it with its skip path x; how is the
scheme. ``ResidualSum`` holds the scheme's parameters and does the combining; the functions
below apply each scheme's initialisation to the layers a task names. A task declares which
schemes it supports in ``knob_values["residual"]``.

- ``none``: F(x), no skip (a plain network);
- ``identity``: x + F(x) (He, Zhang, Ren & Sun 2016);
- ``rezero``: x + alpha * F(x), alpha a learned scalar initialised to 0 (Bachlechner et al. 2020);
- ``skipinit``: x + alpha * F(x), alpha = 0 at the end of the branch (De & Smith 2020), the same
  sum as ReZero; the papers differ in what else the block keeps (normalisation, activation);
- ``fixup``: x + scale * F(x), scale a learned scalar initialised to 1, the branch's last layer
  initialised to 0 and its other layers drawn from He's fan-out init times L^(-1/(2m-2)) (Zhang,
  Dauphin & Ma 2019; the scalar biases around each layer belong to the task's block);
- ``deepnorm``: alpha * x + F(x) with alpha = (2N)^(1/4) before a Post-LN, and the branch's value,
  output and MLP weights initialised with Xavier gain beta = (8N)^(-1/4) (Wang et al. 2022, encoder).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

RESIDUAL_SCHEMES = ("none", "identity", "rezero", "skipinit", "fixup", "deepnorm")
RECURRENT_INITS = ("default", "orthogonal", "identity", "scaled")


class ResidualSum(nn.Module):
    """Combines a block's skip path and branch output under one scheme."""

    def __init__(self, scheme: str, n_blocks: int) -> None:
        super().__init__()
        if scheme not in RESIDUAL_SCHEMES:
            raise ValueError(f"residual scheme '{scheme}' is not one of {', '.join(RESIDUAL_SCHEMES)}")
        self.scheme = scheme
        if scheme in ("rezero", "skipinit"):
            self.alpha = nn.Parameter(torch.zeros(()))
        if scheme == "fixup":
            self.scale = nn.Parameter(torch.ones(()))
        self.skip_scale = deepnorm_alpha(n_blocks) if scheme == "deepnorm" else 1.0

    def forward(self, skip: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if self.scheme == "none":
            return branch
        if self.scheme in ("rezero", "skipinit"):
            return skip + self.alpha * branch
        if self.scheme == "fixup":
            return skip + self.scale * branch
        return self.skip_scale * skip + branch  # identity (skip_scale 1) and deepnorm

    def extra_repr(self) -> str:
        return self.scheme


def deepnorm_alpha(n_blocks: int) -> float:
    """DeepNorm's up-weighting of the skip path, encoder-only: (2N)^(1/4) (Wang et al. 2022, table 1)."""
    return (2 * n_blocks) ** 0.25


def deepnorm_init(weights: Iterable[torch.Tensor], n_blocks: int) -> None:
    """DeepNorm: Xavier normal with gain beta = (8N)^(-1/4) on the value, output and MLP weights."""
    beta = (8 * n_blocks) ** -0.25
    with torch.no_grad():
        for w in weights:
            nn.init.xavier_normal_(w, gain=beta)


def fixup_init(first: Iterable[torch.Tensor], last: Iterable[torch.Tensor], n_branches: int, m: int) -> None:
    """Fixup (Zhang, Dauphin & Ma 2019, sec. 3, rules 1-2): draw each branch's first ``m - 1`` layers
    from He's normal init, N(0, 2 / fan_out) (fan-out = out_channels * kernel area, as the official
    code ``cifar/models/fixup_resnet_cifar.py`` does), scaled by L^(-1/(2m-2)) for L = ``n_branches``;
    set each branch's last layer (and whatever else ``last`` names, e.g. the classifier) to 0."""
    factor = n_branches ** (-1.0 / (2 * m - 2))
    with torch.no_grad():
        for w in first:
            fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
            w.normal_(0.0, (2.0 / fan_out) ** 0.5 * factor)
        for w in last:
            w.zero_()


def init_recurrent(
    weight_hh: torch.Tensor, biases: Iterable[torch.Tensor], scheme: str, hidden: int, gain: float = 1.0
) -> None:
    """Orthogonal (Saxe et al. 2014), identity (Le, Jaitly & Hinton 2015) or scaled Gaussian
    blocks for each gate's recurrent matrix, biases zero; ``default`` keeps PyTorch's initialisation.

    ``scaled`` draws N(0, gain^2 / hidden) entries: by the circular law the spectral radius is close
    to ``gain``, so gain > 1 puts a tanh RNN in the chaotic phase where gradients through time can
    grow geometrically (Sompolinsky et al. 1988; Pascanu et al. 2013: rho > 1 is necessary for it)."""
    if scheme not in RECURRENT_INITS:
        raise ValueError(f"recurrent init '{scheme}' is not one of {', '.join(RECURRENT_INITS)}")
    if scheme == "default":
        return
    with torch.no_grad():
        for block in weight_hh.view(-1, hidden, hidden):  # (gates, H, H)
            if scheme == "orthogonal":
                nn.init.orthogonal_(block)
            elif scheme == "scaled":
                block.normal_(0.0, gain / hidden**0.5)
            else:
                block.copy_(torch.eye(hidden))
        for b in biases:
            b.zero_()


def init_forget_bias(bias_ih: torch.Tensor, bias_hh: torch.Tensor, value: float, hidden: int) -> None:
    """Set an LSTM's forget-gate bias (PyTorch gate order i, f, g, o) to ``value`` in total: the
    input-side bias holds it, the recurrent-side one is zero (Gers, Schmidhuber & Cummins 2000;
    Jozefowicz, Zaremba & Sutskever 2015 recommend 1, so the cell state is kept by default)."""
    with torch.no_grad():
        bias_ih[hidden : 2 * hidden].fill_(value)
        bias_hh[hidden : 2 * hidden].zero_()
