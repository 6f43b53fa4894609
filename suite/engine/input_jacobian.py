"""The ``input_jacobian`` probe: how much the input-output Jacobian of a feed-forward net varies
between inputs and initialisations (Hanin 2018).

On a sampled step it takes the step's input batch x and one fixed unit output direction u (the
normalised all-ones vector: with Gaussian weights every direction has the same law) and computes
ln ||J(x_i)^T u||^2 for every input x_i of the batch, J(x) = df(x)/dx the Jacobian of the logits,
by one extra forward and backward pass that touches neither the parameters' gradients nor any
state (a model with batch norm is not served: its forward pass in training mode updates the
running statistics). It emits the batch's mean and variance (``ddof=0``) of that log over the inputs
whose gradient is not exactly 0, from which the variance over inputs *and* seeds is pooled
(``vanex.report.claims_builtin``), and the fraction of inputs for which it is 0: a layer with no
active unit for that input, a net born dead there (Lu et al. 2019), which the log cannot describe.

Not part of the default probes: a study asks for it (``probe.names``). It lives outside the training
core, so only the records that apply it name its code (``vanex.records.code``).
"""

from __future__ import annotations

import torch
from torch import nn
from vanex.engine.probes import Probe, ProbeContext
from vanex.engine.task import ProbedModel, Task
from vanex.registry import PROBES


@PROBES.register("input_jacobian")
class InputJacobian(Probe):
    """Mean and variance over the batch of ln ||J(x)^T u||^2 (feed-forward tasks without batch norm)."""

    metrics = ("jacobian_logsq_mean", "jacobian_logsq_var", "jacobian_zero_fraction")

    def applies(self, task: Task, model: ProbedModel) -> bool:
        stateful = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        return not task.capabilities and not stateful

    def before_forward(self, ctx: ProbeContext) -> None:
        x = ctx.batch[0] if isinstance(ctx.batch, (tuple, list)) else ctx.batch
        if not (torch.is_tensor(x) and x.is_floating_point()):
            return
        x = x.detach().clone().requires_grad_(True)
        out = ctx.model(x)
        u = torch.full((out.shape[-1],), out.shape[-1] ** -0.5, dtype=out.dtype, device=out.device)
        (grad,) = torch.autograd.grad((out.reshape(-1, out.shape[-1]) @ u).sum(), x)
        logsq = grad.reshape(len(grad), -1).double().pow(2).sum(1).log()
        alive = logsq[torch.isfinite(logsq)]  # J(x) = 0: a layer with no active unit for x (born dead there)
        ctx.rows.add(ctx.step, "jacobian_zero_fraction", [""], 1.0 - torch.isfinite(logsq).double().mean())
        ctx.rows.add(ctx.step, "jacobian_logsq_mean", [""], alive.mean())
        ctx.rows.add(ctx.step, "jacobian_logsq_var", [""], alive.var(unbiased=False))
