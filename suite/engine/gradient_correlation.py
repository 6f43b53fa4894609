"""The ``gradient_correlation`` probe: how alike the input gradients of nearby inputs are (Balduzzi et
al. 2017, The shattered gradients problem: if resnets are the answer, then what is the question?).

Balduzzi et al. take a net with one input, evaluate d(output)/d(input) at 256 evenly spaced points
of an interval, and find the series brown noise (neighbours alike) in a shallow net, white noise
(neighbours unrelated) in a deep feed-forward one, and far less shattered with skip connections.
Here the one input is the position t on the segment between the first two inputs a, b of the
step's batch: on a sampled step the probe evaluates the net at the ``POINTS`` points
x_k = a + t_k (b - a), t_k evenly spaced on [0, 1], as one batch (batch norm normalises over it, in
training mode, as in training), takes the directional derivative d_k = (b - a) . d(u . f)/dx at
each (u the normalised all-ones output direction; the gradient of the batch's summed u . f, so with
batch norm it runs through the batch statistics as a training step's does) and emits the
autocorrelation of d_k - mean(d) over the segment at ``LAGS``: 1 for a smooth series, near 0 for
white noise. No parameter's gradient is touched and batch norm's
running statistics are put back as they were.

Not part of the default probes: a study asks for it (``probe.names``). It lives outside the training
core, so only the records that apply it name its code (``vanex.records.code``).
"""

from __future__ import annotations

import torch
from vanex.engine.probes import Probe, ProbeContext
from vanex.engine.task import ProbedModel, Task
from vanex.registry import PROBES

POINTS = 256  # points on the segment, as Balduzzi et al.'s grid
LAGS = (1, 2, 4, 8, 16, 32, 64)  # in points: neighbours (1) to a quarter of the segment (64)


@PROBES.register("gradient_correlation")
class GradientCorrelation(Probe):
    """Autocorrelation along a segment between two inputs of the input-output gradient (feed-forward tasks)."""

    metrics = ("grad_autocorr",)

    def applies(self, task: Task, model: ProbedModel) -> bool:
        return not task.capabilities

    def before_forward(self, ctx: ProbeContext) -> None:
        x = ctx.batch[0] if isinstance(ctx.batch, (tuple, list)) else ctx.batch
        if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() == 2 and len(x) >= 2):
            return
        a, b = x[0].detach(), x[1].detach()
        t = torch.linspace(0.0, 1.0, POINTS, dtype=x.dtype, device=x.device).unsqueeze(1)
        line = (a + t * (b - a)).requires_grad_(True)  # (POINTS, inputs)
        saved = {name: buffer.clone() for name, buffer in ctx.model.named_buffers()}
        try:
            out = ctx.model(line)
            u = torch.full((out.shape[-1],), out.shape[-1] ** -0.5, dtype=out.dtype, device=out.device)
            (grad,) = torch.autograd.grad((out @ u).sum(), line)
        finally:
            with torch.no_grad():
                for name, buffer in ctx.model.named_buffers():
                    buffer.copy_(saved[name])
        d = (grad @ (b - a)).double()
        d = d - d.mean()
        power = (d * d).sum()
        values = torch.stack([(d[:-k] * d[k:]).sum() / power for k in LAGS])  # NaN for a constant series
        ctx.rows.add(ctx.step, "grad_autocorr", [f"lag{k}" for k in LAGS], values)
