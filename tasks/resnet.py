"""resnet: a CIFAR-style ResNet (He, Zhang, Ren & Sun 2016, section 4.2) on the digits images.

Depth 6n+2: a 3x3 stem convolution, three stages of n basic blocks (two 3x3 convolutions
each) with widths w, 2w, 4w on 8x8, 4x4 and 2x2 maps, global average pooling and a linear
classifier; batch norm and He init as in the paper, shortcuts of type A (subsample and
zero-pad) where the shape changes. The baseline form is ``plain`` (no shortcuts), the network
whose degradation with depth motivated residual learning. Knobs: residual (none, identity,
fixup, rezero, skipinit), norm (batchnorm, none), init.

Training recipe (``conf/task/resnet.yaml``): He et al.'s SGD with momentum 0.9, weight decay 1e-4
and batch 128 (sec. 4.2); scaled down for a CPU budget to width 8 (theirs 16), 140 steps at a
constant learning rate 0.05 (theirs 0.1, divided by 10 at 32k and 48k of 64k iterations); at 0.1
ReZero and SkipInit diverge or stall without normalisation here. Deviations: README.

Fixup follows the official implementation (github.com/hongyi-zhang/Fixup,
``cifar/models/fixup_resnet_cifar.py`` and ``cifar/cifar_train.py``): no normalisation; scalar
biases before each convolution, after the first one's and before the activations (``bias1a``,
``bias1b``, ``bias2a``, ``bias2b``), one after the stem convolution and one before the
classifier; the multiplier ``scale`` on the branch output, before ``bias2b``; the downsampling
shortcut taking ``x + bias1a``; each branch's first convolution drawn from He's fan-out normal
init times L^(-1/2), its last convolution and the classifier zero; and the scalar biases,
multipliers and the classifier's bias trained at ``fixup_scalar_lr`` times the learning rate
(1/10 in the official training script).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from vanex.engine.nn import INITS, Activation, init_linear_stack
from vanex.engine.schemes import ResidualSum, fixup_init
from vanex.engine.task import Layer, ProbedModel, within
from vanex.registry import TASKS
from vanex.tasks.digits import DigitsClassification

RESIDUALS = ("none", "identity", "fixup", "rezero", "skipinit")  # schemes of vanex.engine.schemes this task composes


@dataclass
class ResNetConfig:
    """Settings of ``resnet``; values and their comments live in ``conf/task/resnet.yaml``."""

    depth: int
    width: int
    norm: str
    residual: str
    init: str
    steps: int
    batch_size: int
    test_fraction: float
    split_seed: int
    fixup_scalar_lr: float

    def __post_init__(self) -> None:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2 with n >= 1 (8, 20, 56, 110...), got {self.depth}")
        within("resnet", depth=(self.depth, 8, 1202), width=(self.width, 1, 512), steps=(self.steps, 1, 10**7))
        if not self.fixup_scalar_lr > 0:
            raise ValueError(f"resnet fixup_scalar_lr must be > 0, got {self.fixup_scalar_lr}")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batchnorm" else nn.Identity()


class BasicBlock(nn.Module):
    """conv-norm-relu-conv-norm, plus a shortcut combined by a ``vanex.engine.schemes.ResidualSum``:

    - none (plain): relu(F(x)); identity: relu(x + F(x)) (He et al. 2016);
    - fixup: relu(x + scale * F(x) + bias2b), F(x) = conv2(relu(conv1(x + bias1a) + bias1b) + bias2a),
      no normalisation (Zhang, Dauphin & Ma 2019, official code; init in ``vanex.engine.schemes.fixup_init``);
    - rezero: x + alpha * F(x) and no activation after the sum, so the block is the identity at
      initialisation (Bachlechner et al. 2020);
    - skipinit: relu(x + alpha * F(x)) (De & Smith 2020)."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: ResNetConfig, n_blocks: int) -> None:
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
        self.sum = ResidualSum(cfg.residual, n_blocks)
        if cfg.residual == "fixup":  # scalar biases, zero at init, named as in the official code
            self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
            self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: subsample, then zero-pad the new channels (no parameters); under Fixup the
        downsampling shortcut takes ``x + bias1a``, as the official code does."""
        if self.stride == 1 and self.pad == 0:
            return x
        if self.scheme == "fixup":
            x = x + self.bias1a
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F(x) (with Fixup's scalar biases where the scheme has them)."""
        if self.scheme == "fixup":
            return self.conv2(self.act1(self.conv1(x + self.bias1a) + self.bias1b) + self.bias2a)
        return self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))  # (B, C_out, H', W')

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        out = self.sum(self.shortcut(x) if self.scheme != "none" else x, self.branch(x))
        if self.scheme == "fixup":
            out = out + self.bias2b  # after the multiplier: x + scale * F(x) + bias2b
        return out if self.scheme == "rezero" else self.act2(out)  # ReZero: no activation after the sum

    def fixup_scalars(self) -> list[nn.Parameter]:
        return [self.bias1a, self.bias1b, self.bias2a, self.sum.scale, self.bias2b]


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
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1, cfg, 3 * n))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c_in, n_classes)
        self.fixup = cfg.residual == "fixup"
        if self.fixup:  # Fixup's scalar biases after the stem and before the classifier (official code)
            self.stem_bias, self.head_bias = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        init_linear_stack([self], cfg.init)
        if self.fixup:  # m = 2 layers per branch; the classifier starts at zero too
            first, last = [b.conv1.weight for b in self.blocks], [b.conv2.weight for b in self.blocks]
            fixup_init(first, [*last, self.head.weight, self.head.bias], len(self.blocks), m=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_norm(self.stem(x.view(-1, 1, 8, 8)))  # (B, w, 8, 8)
        x = self.stem_act(x + self.stem_bias if self.fixup else x)
        for block in self.blocks:
            x = block(x)  # (B, C, H, W)
        x = x.mean(dim=(2, 3))  # (B, C)
        return self.head(x + self.head_bias if self.fixup else x)  # (B, n_classes)

    def fixup_scalars(self) -> list[nn.Parameter]:
        """Fixup's scalar biases and multipliers, and the classifier's bias: the parameters whose
        names contain 'bias' or 'scale' in the official code, which trains them at lr / 10."""
        if not self.fixup:
            return []
        blocks = [p for b in self.blocks for p in b.fixup_scalars()]
        return [self.stem_bias, *blocks, self.head_bias, self.head.bias]

    def layers(self) -> list[Layer]:
        out = [Layer("stem", self.stem.weight, self.stem_act, hidden=False, kind="stem")]  # the input layer
        for i, b in enumerate(self.blocks):
            out += [
                Layer(f"block{i}.conv1", b.conv1.weight, b.act1, block=i, kind="conv1"),
                Layer(f"block{i}.conv2", b.conv2.weight, b.act2, block=i, kind="conv2"),
            ]
        return out + [Layer("head", self.head.weight, hidden=False, kind="head")]


@TASKS.register("resnet")
class ResNet(DigitsClassification):
    Config = ResNetConfig
    knobs = ("norm", "residual", "init")
    knob_values = {"norm": ("batchnorm", "none"), "residual": RESIDUALS, "init": INITS}

    def build_model(self) -> CifarResNet:
        return CifarResNet(self.config, self.data.n_classes).to(self.device)

    def param_groups(self, model: CifarResNet) -> list[dict]:
        """Fixup: its scalars at ``fixup_scalar_lr`` times the learning rate (official
        ``cifar/cifar_train.py``: ``base_lr / 10``); every other scheme: one group."""
        scalars = {id(p) for p in model.fixup_scalars()}
        if not scalars:
            return super().param_groups(model)
        params = [p for p in model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if id(p) not in scalars]},
            {"params": [p for p in params if id(p) in scalars], "lr_scale": self.config.fixup_scalar_lr},
        ]
