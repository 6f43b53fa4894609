"""resnet: a CIFAR-style ResNet (He, Zhang, Ren & Sun 2016, section 4.2) on the digits images.

Depth 6n+2: a 3x3 stem convolution, three stages of n basic blocks (two 3x3 convolutions
each) with widths w, 2w, 4w on 8x8, 4x4 and 2x2 maps, global average pooling and a linear
classifier; batch norm and He init as in the paper, shortcuts of type A (subsample and
zero-pad) where the shape changes. The baseline form is ``plain`` (no shortcuts), the network
whose degradation with depth motivated residual learning. Knobs: residual (none, identity,
fixup, rezero, skipinit), norm (batchnorm, none), init.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from suite.nn import INITS, Activation, check_choice, init_linear_stack
from suite.registry import TASKS
from suite.task import Layer, ProbedModel
from tasks.digits import DigitsClassification

RESIDUALS = ("none", "identity", "fixup", "rezero", "skipinit")


@dataclass
class ResNetConfig:
    depth: int = 20  # 6n+2 weight layers: 8, 20, 56, 110
    width: int = 8  # channels of the first stage (then 2x, 4x); He et al. use 16 on CIFAR
    norm: str = "batchnorm"  # knob: batchnorm | none
    residual: str = "none"  # knob: none (plain) | identity | fixup | rezero | skipinit
    init: str = "he"  # knob: he (the paper's) | default | xavier | orthogonal | small
    steps: int = 400  # optimiser steps
    batch_size: int = 64  # images per step
    test_fraction: float = 0.2  # share of the 1,797 images held out
    split_seed: int = 0  # train/test split seed, fixed across run seeds

    def __post_init__(self) -> None:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2 with n >= 1 (8, 20, 56, 110...), got {self.depth}")
        if self.width < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("resnet needs width, steps and batch_size >= 1")
        for knob, accepted in ResNet.knob_values.items():
            check_choice(knob, getattr(self, knob), accepted)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batchnorm" else nn.Identity()


class BasicBlock(nn.Module):
    """conv-norm-relu-conv-norm, plus a shortcut that depends on the residual scheme:

    - none (plain): relu(F(x)); identity: relu(x + F(x)) (He et al. 2016);
    - fixup: relu(x + scale * F(x)) with no normalisation, scalar biases, the branch's last
      conv zero-initialised and the first scaled by L^(-1/2) (Zhang, Dauphin & Ma 2019);
    - rezero: x + alpha * F(x), alpha = 0 and no activation after the sum, so the block is the
      identity at initialisation (Bachlechner et al. 2020);
    - skipinit: relu(x + alpha * F(x)), alpha = 0, the scalar at the end of the branch
      (De & Smith 2020)."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: ResNetConfig) -> None:
        super().__init__()
        self.scheme = cfg.residual
        norm = "none" if cfg.residual == "fixup" else cfg.norm
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(norm, c_out)
        self.act1 = Activation("relu")
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, c_out)
        self.act2 = Activation("relu")
        self.stride, self.pad = stride, c_out - c_in
        if cfg.residual in ("rezero", "skipinit"):
            self.alpha = nn.Parameter(torch.zeros(()))
        if cfg.residual == "fixup":
            self.biases = nn.Parameter(torch.zeros(4))  # before conv1, after conv1, before conv2, after conv2
            self.scale = nn.Parameter(torch.ones(()))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: subsample, then zero-pad the new channels (no parameters)."""
        if self.stride == 1 and self.pad == 0:
            return x
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F(x), scaled as the scheme says (alpha, or Fixup's scalar and biases)."""
        if self.scheme == "fixup":
            b = self.biases
            return self.scale * self.conv2(self.act1(self.conv1(x + b[0]) + b[1]) + b[2]) + b[3]
        f = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))  # (B, C_out, H', W')
        return self.alpha * f if self.scheme in ("rezero", "skipinit") else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        if self.scheme == "none":
            return self.act2(self.branch(x))
        if self.scheme == "rezero":  # no activation after the sum
            return self.shortcut(x) + self.branch(x)
        return self.act2(self.shortcut(x) + self.branch(x))


class CifarResNet(ProbedModel):
    def __init__(self, cfg: ResNetConfig, n_classes: int = 10) -> None:
        super().__init__()
        n, w = (cfg.depth - 2) // 6, cfg.width
        self.stem = nn.Conv2d(1, w, 3, 1, 1, bias=False)
        self.stem_norm = _norm("none" if cfg.residual == "fixup" else cfg.norm, w)
        self.stem_act = Activation("relu")
        blocks, c_in = [], w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1, cfg))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c_in, n_classes)
        init_linear_stack([self], cfg.init)
        if cfg.residual == "fixup":
            self._fixup_init(len(blocks))

    def _fixup_init(self, n_branches: int) -> None:
        """Zhang et al. (2019): branch's first layer x L^(-1/(2m-2)) with m=2, last layer and head 0."""
        with torch.no_grad():
            for block in self.blocks:
                block.conv1.weight.mul_(n_branches ** (-0.5))
                block.conv2.weight.zero_()
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_norm(self.stem(x.view(-1, 1, 8, 8))))  # (B, w, 8, 8)
        for block in self.blocks:
            x = block(x)  # (B, C, H, W)
        return self.head(x.mean(dim=(2, 3)))  # (B, n_classes)

    def layers(self) -> list[Layer]:
        out = [Layer("stem", self.stem.weight, self.stem_act, hidden=False)]  # the input layer, like an embedding
        for i, b in enumerate(self.blocks):
            out += [Layer(f"block{i}.conv1", b.conv1.weight, b.act1), Layer(f"block{i}.conv2", b.conv2.weight, b.act2)]
        return out + [Layer("head", self.head.weight, hidden=False)]


@TASKS.register("resnet")
class ResNet(DigitsClassification):
    Config = ResNetConfig
    knobs = ("norm", "residual", "init")
    knob_values = {"norm": ("batchnorm", "none"), "residual": RESIDUALS, "init": INITS}

    def build_model(self) -> CifarResNet:
        return CifarResNet(self.config, self.data.n_classes).to(self.device)
