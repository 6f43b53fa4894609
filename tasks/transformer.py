"""transformer: a stack of L transformer encoder blocks on an in-code sorting task.

Each example is a sequence of ``seq_len`` tokens drawn uniformly from ``vocab``; the target at
position i is the i-th smallest token, so every output needs attention over the whole input.
The default block is the original Post-LN (Vaswani et al. 2017: x <- LN(x + F(x))), trained
with Adam and no warmup: the configuration Xiong et al. (2020) show to be unstable at depth,
because the gradient near the output is large at initialisation. Knobs: block_order (post,
pre), norm (layernorm, none), residual (identity, rezero, deepnorm), init.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from vanex.engine.nn import Activation, init_weight
from vanex.engine.schemes import ResidualSum, deepnorm_init
from vanex.engine.task import SEED_MAX, Capability, Layer, ProbedModel, Task, within
from vanex.registry import TASKS


@dataclass
class TransformerConfig:
    """Settings of ``transformer``; values and their comments live in ``conf/task/transformer.yaml``."""

    depth: int
    width: int
    heads: int
    mlp_ratio: int
    block_order: str
    norm: str
    residual: str
    init: str
    seq_len: int
    vocab: int
    steps: int
    batch_size: int
    eval_size: int
    eval_seed: int

    def __post_init__(self) -> None:
        within(
            "transformer",
            depth=(self.depth, 1, 1000),
            width=(self.width, 1, 8192),
            heads=(self.heads, 1, self.width),
            mlp_ratio=(self.mlp_ratio, 1, 64),
            seq_len=(self.seq_len, 1, 4096),
            vocab=(self.vocab, 2, 100_000),  # one symbol leaves nothing to sort (and no loss to beat)
            steps=(self.steps, 1, 10**7),
            batch_size=(self.batch_size, 1, 4096),
            eval_size=(self.eval_size, 1, 100_000),
            eval_seed=(self.eval_seed, 0, SEED_MAX),
        )
        if self.width % self.heads:
            raise ValueError(f"transformer width {self.width} is not divisible by heads {self.heads}")


def sort_batch(n: int, cfg: TransformerConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, cfg.vocab, (n, cfg.seq_len), generator=generator)  # (n, T)
    return x, x.sort(dim=1).values


def position_only_loss(seq_len: int, vocab: int) -> float:
    """Cross-entropy (nats per token) of the best predictor that sees only positions: at position k
    it predicts the law of the k-th smallest of ``seq_len`` uniform draws from ``vocab`` values,
    P(X_(k) <= v) = sum_{j>=k} C(n, j) F^j (1 - F)^(n-j) with F = (v + 1) / vocab. Below ln(vocab)."""
    n, total = seq_len, 0.0
    for k in range(1, n + 1):
        cdf = [
            sum(math.comb(n, j) * f**j * (1 - f) ** (n - j) for j in range(k, n + 1))
            for f in ((v + 1) / vocab for v in range(vocab))
        ]
        pmf = [b - a for a, b in zip([0.0, *cdf[:-1]], cdf, strict=True)]
        total -= sum(p * math.log(p) for p in pmf if p > 0)
    return total / n


class SelfAttention(nn.Module):
    """Multi-head softmax attention written out, so the attention-entropy probe can see the weights."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.capture = False
        self.probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, dh) each
        probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)  # (B, H, T, T)
        if self.capture:
            self.probs = probs.detach()
        return self.out((probs @ v).transpose(1, 2).reshape(b, t, d))  # (B, T, d)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.width
        self.cfg = cfg
        self.attn = SelfAttention(d, cfg.heads)
        self.mlp_in = nn.Linear(d, cfg.mlp_ratio * d)
        self.act = Activation("gelu")
        self.mlp_out = nn.Linear(cfg.mlp_ratio * d, d)
        use_norm = cfg.norm == "layernorm" and cfg.residual != "rezero"  # ReZero drops LayerNorm
        self.norm1 = nn.LayerNorm(d) if use_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(d) if use_norm else nn.Identity()
        # one scheme per block; ReZero's alpha is shared by both sublayers, as in its official code
        self.sum = ResidualSum(cfg.residual, cfg.depth)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_out(self.act(self.mlp_in(x)))  # (B, T, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d)
        for branch, norm in ((self.attn, self.norm1), (self.mlp, self.norm2)):
            if self.cfg.residual == "rezero":  # no normalisation at all
                x = self.sum(x, branch(x))
            elif self.cfg.block_order == "pre":
                x = self.sum(x, branch(norm(x)))
            else:  # Post-LN; DeepNorm up-weights the skip path inside the sum
                x = norm(self.sum(x, branch(x)))
        return x


class TransformerNet(ProbedModel):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.width
        self.embed = nn.Embedding(cfg.vocab, d)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, d) * 0.02)  # learned positions (T, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        final_norm = cfg.block_order == "pre" and cfg.norm == "layernorm" and cfg.residual != "rezero"
        self.final_norm = nn.LayerNorm(d) if final_norm else nn.Identity()  # Pre-LN needs one at the end
        self.head = nn.Linear(d, cfg.vocab)
        self._init(cfg)

    def _init(self, cfg: TransformerConfig) -> None:
        with torch.no_grad():
            for block in self.blocks:
                for linear in (block.attn.qkv, block.attn.out, block.mlp_in, block.mlp_out):
                    init_weight(linear.weight, cfg.init)
                    if cfg.init != "default":
                        linear.bias.zero_()
                if cfg.residual == "deepnorm":  # Wang et al. 2022: q, k Xavier; v, out, MLP with gain beta
                    d = cfg.width
                    nn.init.xavier_normal_(block.attn.qkv.weight[: 2 * d])
                    values = (block.attn.qkv.weight[2 * d :], block.attn.out.weight)
                    deepnorm_init([*values, block.mlp_in.weight, block.mlp_out.weight], cfg.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos  # (B, T, d)
        for block in self.blocks:
            h = block(h)
        return self.head(self.final_norm(h))  # (B, T, vocab)

    def attention_modules(self) -> list[SelfAttention]:
        return [b.attn for b in self.blocks]

    def layers(self) -> list[Layer]:
        out = [Layer("embed", self.embed.weight, hidden=False, kind="embed")]
        for i, b in enumerate(self.blocks):
            out += [
                Layer(f"block{i}.attn_qkv", b.attn.qkv.weight, block=i, kind="attn_qkv"),
                Layer(f"block{i}.attn_out", b.attn.out.weight, block=i, kind="attn_out"),
                Layer(f"block{i}.mlp_in", b.mlp_in.weight, b.act, block=i, kind="mlp_in"),
                Layer(f"block{i}.mlp_out", b.mlp_out.weight, block=i, kind="mlp_out"),
            ]
        return out + [Layer("head", self.head.weight, hidden=False, kind="head")]


@TASKS.register("transformer")
class Transformer(Task):
    Config = TransformerConfig
    knobs = ("block_order", "norm", "residual", "init")
    knob_values = {
        "block_order": ("post", "pre"),
        "norm": ("layernorm", "none"),
        "residual": ("identity", "rezero", "deepnorm"),
        "init": ("default", "xavier", "small"),
    }
    headline_metrics = ("loss_vs_position_only", "sort_accuracy")
    capabilities = frozenset({Capability.ATTENTION})

    def __init__(self, config: TransformerConfig, device: torch.device) -> None:
        super().__init__(config, device)
        g = torch.Generator().manual_seed(config.eval_seed)
        self.eval_x, self.eval_y = (t.to(device) for t in sort_batch(config.eval_size, config, g))

    def build_model(self) -> TransformerNet:
        return TransformerNet(self.config).to(self.device)

    def constants(self) -> dict[str, float]:
        """Both reference levels: uniform guessing, ln(vocab), and the best predictor that sees only
        positions (computed exactly); a collapsed model sits near the latter, not the former."""
        return {
            "uniform_loss": math.log(self.config.vocab),
            "position_only_loss": position_only_loss(self.config.seq_len, self.config.vocab),
        }

    def eval_cost(self) -> float:
        return self.config.eval_size / (3 * self.config.batch_size)

    def chance_loss(self) -> float:
        """The position-only predictor's loss: what a model ignoring token values reaches."""
        return position_only_loss(self.config.seq_len, self.config.vocab)

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        while True:
            x, y = sort_batch(self.config.batch_size, self.config, generator)
            yield x.to(self.device), y.to(self.device)

    def loss(self, model: ProbedModel, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    @torch.no_grad()
    def evaluate(self, model: ProbedModel) -> dict[str, float]:
        was_training = model.training
        model.eval()
        logits = model(self.eval_x)  # (N, T, vocab)
        model.train(was_training)
        loss = float(F.cross_entropy(logits.flatten(0, 1), self.eval_y.flatten()))
        return {
            "train_loss": loss,
            "loss_vs_position_only": loss / self.chance_loss(),
            "sort_accuracy": float((logits.argmax(-1) == self.eval_y).float().mean()),
        }
