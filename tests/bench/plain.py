"""Plain PyTorch twins of vanex's task models, for the probe-overhead benchmark.

Each model does the arithmetic of its task's model in the task's default configuration (same
layers and sizes, nonlinearity, normalisation, residual paths, input handling and loss), written
as a PyTorch user would write it: no Activation, ResidualSum or ProbedModel wrappers, no hooks.
``plain_loop`` trains one with a bare loop, the same optimiser settings and the same batches,
so vanex's overhead can be measured against a plain model, not only against its own model.
Sizes come from the task's config; a non-default knob raises, since no twin is written for it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from vanex.engine.optim import OPTIMIZERS
from vanex.tasks.rnn_copy import DELIMITER

DEFAULT_KNOBS = {  # conf/task/*.yaml: the configuration each twin mirrors
    "deep_mlp": {"activation": "sigmoid", "init": "default", "norm": "none", "residual": "none"},
    "rnn_copy": {"cell": "rnn", "activation": "tanh", "init": "default", "tbptt": 0},
    "rnn_digits": {"cell": "rnn", "activation": "tanh", "init": "default", "tbptt": 0},
    "resnet": {"norm": "batchnorm", "residual": "none", "init": "he"},
    "transformer": {"block_order": "post", "norm": "layernorm", "residual": "identity", "init": "default"},
}


def deep_mlp(task) -> nn.Module:
    """tasks/deep_mlp.py ``MLP``: depth x (Linear, sigmoid), then a linear head; PyTorch's init."""
    cfg, data = task.config, task.data
    dims = [data.x_train.shape[1]] + [cfg.width] * cfg.depth
    layers = [m for a, b in zip(dims[:-1], dims[1:], strict=True) for m in (nn.Linear(a, b), nn.Sigmoid())]
    return nn.Sequential(*layers, nn.Linear(cfg.width, data.n_classes))


class CopyRNN(nn.Module):
    """tasks/rnn_copy.py ``RecurrentNet``: one-hot tokens, a fused tanh nn.RNN over the whole
    sequence (full BPTT), a linear readout at every step."""

    def __init__(self, hidden: int, vocab: int = DELIMITER + 1, n_out: int = DELIMITER) -> None:
        super().__init__()  # tokens blank, 8 symbols, delimiter; outputs blank or a symbol
        self.vocab = vocab
        self.rnn = nn.RNN(vocab, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L) int64
        states, _ = self.rnn(F.one_hot(x, self.vocab).float())  # (B, L, H)
        return self.readout(states)  # (B, L, n_out)


class PixelRNN(nn.Module):
    """tasks/rnn_digits.py ``PixelRNN``: one pixel per step into a fused tanh nn.RNN, a linear
    readout of the last hidden state."""

    def __init__(self, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(1, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 64) pixels
        states, _ = self.rnn(x.unsqueeze(-1))  # (B, 64, H)
        return self.readout(states[:, -1])  # (B, n_classes)


def resnet(task) -> nn.Module:
    """tasks/resnet.py ``CifarResNet`` at its baseline, residual=none: a plain (shortcut-free)
    6n+2-layer CNN, conv-BN-ReLU throughout, widths w, 2w, 4w (stride 2 into the last two
    stages), global average pooling and a linear head; He (fan-in) init, zero biases."""
    cfg, data = task.config, task.data
    n, w, side = (cfg.depth - 2) // 6, cfg.width, math.isqrt(data.x_train.shape[1])

    def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    layers, c_in = [nn.Unflatten(1, (1, side, side)), *conv_bn_relu(1, w)], w
    for stage, c_out in enumerate((w, 2 * w, 4 * w)):
        for i in range(n):
            layers += conv_bn_relu(c_in, c_out, 2 if stage > 0 and i == 0 else 1) + conv_bn_relu(c_out, c_out)
            c_in = c_out
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, data.n_classes))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


class PostLNBlock(nn.Module):
    """Post-LN encoder block: x <- LN(x + attn(x)), x <- LN(x + MLP(x)); fused qkv projection and
    F.scaled_dot_product_attention (nn.TransformerEncoderLayer's MultiheadAttention path measured
    ~5-8% slower than vanex's own block here: packed in-projection reshuffles, extra copies)."""

    def __init__(self, d: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, dh)
        x = self.norm1(x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)))
        return self.norm2(x + self.mlp(x))


class SortTransformer(nn.Module):
    """tasks/transformer.py ``TransformerNet``: token embedding plus learned positions, depth
    Post-LN blocks (GELU MLP, no final norm), a linear head per token; PyTorch's init."""

    def __init__(self, cfg) -> None:
        super().__init__()
        d = cfg.width
        self.embed = nn.Embedding(cfg.vocab, d)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, d) * 0.02)  # (T, d)
        self.blocks = nn.Sequential(*(PostLNBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)))
        self.head = nn.Linear(d, cfg.vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T) int64
        return self.head(self.blocks(self.embed(x) + self.pos))  # (B, T, vocab)


def plain_model(task) -> nn.Module:
    """The plain twin of ``task.build_model()``, on the task's device."""
    knobs = {k: getattr(task.config, k) for k in DEFAULT_KNOBS[task.name]}
    if knobs != DEFAULT_KNOBS[task.name]:
        raise NotImplementedError(f"no plain {task.name} model for {knobs}; only {DEFAULT_KNOBS[task.name]}")
    builders = {
        "deep_mlp": deep_mlp,
        "rnn_copy": lambda t: CopyRNN(t.config.hidden),
        "rnn_digits": lambda t: PixelRNN(t.config.hidden, t.data.n_classes),
        "resnet": resnet,
        "transformer": lambda t: SortTransformer(t.config),
    }
    return builders[task.name](task).to(task.device)


def plain_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, -2), y.flatten())  # every task's loss: (N, C) logits


def bare_steps(task, spec, model: nn.Module, optimizer, loss=None, mitigations=()) -> None:
    """task.steps optimizer steps on the run's batches, nothing else but the mitigations' gradient
    transforms and after-step hooks: the training work no engine can avoid."""
    loss = loss or task.loss
    params = [p for p in model.parameters() if p.requires_grad]
    batches = task.batches(torch.Generator().manual_seed(spec.run.seed))
    for _ in range(task.steps):
        value = loss(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        for m in mitigations:
            m.transform_grads(params)
        optimizer.step()
        for m in mitigations:
            m.after_step(model)


def plain_loop(task, spec) -> None:
    """Train a plain PyTorch model of task's architecture for task.steps steps on task.batches, bare loop."""
    if spec.mitigations:
        raise NotImplementedError("plain_loop mirrors the baseline only, without mitigations")
    model = plain_model(task)
    optimizer = OPTIMIZERS[spec.optim.name][0](model.parameters(), lr=spec.optim.lr, **spec.optim.kwargs)
    bare_steps(task, spec, model, optimizer, plain_loss)
