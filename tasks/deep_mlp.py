"""deep_mlp: an L-layer fully connected classifier on scikit-learn's digits.

The classic vanishing-gradient setting (Glorot & Bengio 2010; Hochreiter 1991): with
sigmoid units, sigma' <= 1/4, and PyTorch's default init, each layer scales the backward
signal by well under 1, so the first layers of a 20-layer net receive a vanishing fraction of
the last layer's gradient. Knobs: activation, init, norm, residual (none or identity, from ``vanex.engine.schemes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from vanex.engine.nn import ACTIVATIONS, INITS, NORMS, Activation, init_linear_stack, make_norm
from vanex.engine.schemes import ResidualSum
from vanex.engine.task import Layer, ProbedModel, within
from vanex.registry import TASKS
from vanex.tasks.digits import DigitsClassification


@dataclass
class DeepMLPConfig:
    """Settings of ``deep_mlp``; values and their comments live in ``conf/task/deep_mlp.yaml``."""

    depth: int
    width: int
    activation: str
    init: str
    weight_scale: float
    bias_scale: float
    norm: str
    residual: str
    steps: int
    batch_size: int
    test_fraction: float
    split_seed: int

    def __post_init__(self) -> None:
        within("deep_mlp", depth=(self.depth, 1, 1000), width=(self.width, 1, 8192), steps=(self.steps, 1, 10**7))
        if not self.weight_scale > 0:
            raise ValueError(f"deep_mlp needs weight_scale > 0, got {self.weight_scale}")
        if not self.bias_scale >= 0:
            raise ValueError(f"deep_mlp needs bias_scale >= 0, got {self.bias_scale}")


class Block(nn.Module):
    """Linear -> norm -> activation, optionally wrapped in an identity skip."""

    def __init__(self, d_in: int, d_out: int, cfg: DeepMLPConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = make_norm(cfg.norm, d_out)
        self.act = Activation(cfg.activation)
        self.sum = ResidualSum(cfg.residual if d_in == d_out else "none", cfg.depth)
        self.bare = cfg.norm == "none" and self.sum.scheme == "none"  # Linear -> activation only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bare:  # the same arithmetic without two identity module calls (~10% of a step at width 64)
            return self.act(self.linear(x))  # (B, d_out)
        return self.sum(x, self.act(self.norm(self.linear(x))))


def scaled_init(modules: list[nn.Module], sigma_w: float, sigma_b: float = 0.0) -> None:
    """The mean-field initialisation of Poole et al. (2016) and Schoenholz et al. (2017): every
    weight N(0, sigma_w^2 / fan_in), every bias N(0, sigma_b^2) (0 when sigma_b = 0). sigma_w =
    sqrt(2) with ReLU is He init; ReLU above it, or tanh far above 1, is the exploding (chaotic)
    phase. With sigma_b > 0 tanh's critical point moves above 1 (sigma_b^2 = 0.05: sigma_w^2 ~ 1.76)."""
    with torch.no_grad():
        for module in modules:
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, sigma_w / m.in_features**0.5)
                    if sigma_b > 0:
                        m.bias.normal_(0.0, sigma_b)
                    else:
                        nn.init.zeros_(m.bias)


class MLP(ProbedModel):
    def __init__(self, d_in: int, n_classes: int, cfg: DeepMLPConfig) -> None:
        super().__init__()
        dims = [d_in] + [cfg.width] * cfg.depth
        self.blocks = nn.ModuleList(Block(a, b, cfg) for a, b in zip(dims[:-1], dims[1:], strict=False))
        self.head = nn.Linear(dims[-1], n_classes)
        if cfg.init == "scaled":
            scaled_init([*self.blocks, self.head], cfg.weight_scale, cfg.bias_scale)
        else:
            init_linear_stack([*self.blocks, self.head], cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # (B, width)
        return self.head(x)  # (B, n_classes)

    def layers(self) -> list[Layer]:
        hidden = [
            Layer(f"hidden_{i}", b.linear.weight, b.act, block=i, kind="hidden") for i, b in enumerate(self.blocks)
        ]
        return hidden + [Layer("head", self.head.weight, hidden=False, kind="head")]


@TASKS.register("deep_mlp")
class DeepMLP(DigitsClassification):
    Config = DeepMLPConfig
    knobs = ("activation", "init", "norm", "residual")
    knob_values = {
        "activation": tuple(ACTIVATIONS),  # identity gives a deep linear network (Saxe et al. 2014)
        "init": (*INITS, "scaled"),  # scaled: N(0, weight_scale^2 / fan_in), the mean-field init
        "norm": NORMS,
        "residual": ("none", "identity"),
    }

    def constants(self) -> dict[str, float]:
        """The input's mean second moment, the q_0 a mean-field prediction starts from."""
        return {"input_second_moment": float(self.data.x_train.double().pow(2).mean())}

    def build_model(self) -> MLP:
        return MLP(self.data.x_train.shape[1], self.data.n_classes, self.config).to(self.device)
