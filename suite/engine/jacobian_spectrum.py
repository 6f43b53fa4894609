"""The ``jacobian_spectrum`` probe: how far a feed-forward net's input-output Jacobian is from an
isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017).

On a sampled step it takes the first ``INPUTS`` inputs of the step's batch and, for each, the
Jacobian J = dx_L/dx of the last hidden layer's activation x_L with respect to the input, exactly
(the input repeated once per output unit, one backward pass; no parameter's gradient or state is
touched, so a model with batch norm is not served). From the squared singular values lambda of J
over those inputs it emits their mean and their normalised variance E[lambda^2] / E[lambda]^2 - 1:
0 for an isometry, growing with depth as the spectrum spreads.

Not part of the default probes: a study asks for it (``probe.names``). It lives outside the training
core, so only the records that apply it name its code (``vanex.records.code``).
"""

from __future__ import annotations

import torch
from torch import nn
from vanex.engine.probes import Probe, ProbeContext
from vanex.engine.task import ProbedModel, Task
from vanex.registry import PROBES

INPUTS = 8  # inputs of the batch whose Jacobian is taken


@PROBES.register("jacobian_spectrum")
class JacobianSpectrum(Probe):
    """Mean and normalised variance of the squared singular values of d(last hidden activation)/d(input)."""

    metrics = ("jacobian_sv2_mean", "jacobian_sv2_normvar")

    def applies(self, task: Task, model: ProbedModel) -> bool:
        stateful = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        hidden = [layer for layer in model.layers() if layer.hidden and layer.activation is not None]
        return not task.capabilities and not stateful and bool(hidden)

    def before_forward(self, ctx: ProbeContext) -> None:
        x = ctx.batch[0] if isinstance(ctx.batch, (tuple, list)) else ctx.batch
        if not (torch.is_tensor(x) and x.is_floating_point() and x.dim() == 2):
            return
        last = [layer for layer in ctx.layers if layer.hidden and layer.activation is not None][-1]
        captured: list[torch.Tensor] = []
        handle = last.activation.register_forward_hook(lambda module, inputs, out: captured.append(out))
        width, squares = last.weight.shape[0], []  # the last hidden layer's units
        try:
            for xi in x[:INPUTS].detach():
                captured.clear()
                rep = xi.repeat(width, 1).requires_grad_(True)  # row j carries output unit j's gradient
                ctx.model(rep)
                out = captured[-1]
                (jac,) = torch.autograd.grad(out.diagonal().sum(), rep)  # (width, inputs): J
                squares.append(torch.linalg.svdvals(jac.double()).pow(2))
        finally:
            handle.remove()
        lam = torch.cat(squares)
        mean = lam.mean()
        ctx.rows.add(ctx.step, "jacobian_sv2_mean", [""], mean)
        ctx.rows.add(ctx.step, "jacobian_sv2_normvar", [""], lam.pow(2).mean() / mean.pow(2) - 1)
