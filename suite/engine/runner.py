"""Run one cell: build task and model, apply mitigations, train, probe, diagnose, record.

A run is a pure function of its resolved config: seeds for torch, numpy and random are set
from ``seed``, deterministic algorithms are on, the thread count is fixed and recorded. A
diverged run (non-finite loss or gradients) stops early and is recorded as ``diverged``;
an exception inside training is recorded as ``failed`` with the error, and never lost.
"""

from __future__ import annotations

import os
import random
import sys
import time
import traceback
from typing import Any

import numpy as np
import torch
from vanex import numerics
from vanex.engine.config import RunSpec
from vanex.engine.mitigation import Mitigation
from vanex.engine.optim import OPTIMIZERS, OptimConfig
from vanex.engine.probes import ProbeContext, Rows, eval_schedule, global_norm, log_schedule
from vanex.engine.provenance import provenance
from vanex.errors import UserError
from vanex.records import code
from vanex.records.store import SCHEMA_VERSION, write_record
from vanex.registry import PROBES
from vanex.science.diagnosis import diagnose

CHECK_EVERY = 25  # steps between non-finite checks of the running loss and of the gradients (one host sync each)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch.cuda.is_available() is False; use device=cpu or device=auto")
    return torch.device(name)


def seed_everything(seed: int, threads: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic results
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    # torch.use_deterministic_algorithms also sets Inductor's flag, and importing Inductor costs ~1.2-2.3 s
    # a process; nothing here compiles, so set the ATen flag alone (and Inductor's only if already loaded).
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True


def make_optimizer(cfg: OptimConfig, groups: list[dict[str, Any]], mitigations: list) -> torch.optim.Optimizer:
    """The optimiser over ``groups`` (``Task.param_groups``): each group's ``lr_scale`` multiplies ``cfg.lr``."""
    kwargs = dict(cfg.kwargs)
    for m in mitigations:
        kwargs = m.optimizer_kwargs(kwargs)
    groups = [
        {**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": cfg.lr * g.get("lr_scale", 1.0)} for g in groups
    ]
    return OPTIMIZERS[cfg.name][0](groups, lr=cfg.lr, **kwargs)


class Progress:
    """One line about every tenth of the run, on stderr."""

    def __init__(self, label: str, steps: int, enabled: bool) -> None:
        self.label, self.steps, self.enabled = label, steps, enabled
        self.every = max(1, steps // 10)
        self.next = self.every
        self.start = time.perf_counter()

    def update(self, step: int, loss: float | None) -> None:
        if self.enabled and step >= self.next:
            self.next = (step // self.every + 1) * self.every
            loss_text = "" if loss is None else f" loss {loss:.4g}"
            print(
                f"  [{self.label}] step {step}/{self.steps}{loss_text} ({time.perf_counter() - self.start:.1f}s)",
                file=sys.stderr,
            )


def run(spec: RunSpec) -> dict[str, Any]:
    """Train one configuration and write its record; returns the run.json dict."""
    rid = spec.run_id
    device = resolve_device(spec.run.device)
    started = time.perf_counter()
    seed_everything(spec.run.seed, spec.run.threads)
    if spec.run.progress and (note := numerics.warning(torch.backends.cpu.get_cpu_capability())):
        print(f"vanex: {note}", file=sys.stderr)
    status, error, rows, task = "completed", None, Rows(), None
    used: list[type] = [spec.task_cls, *map(type, spec.mitigations)]  # the classes whose code trains the run
    metrics: dict[str, float] = {}
    layers: list[dict[str, Any]] = []
    try:  # data and model are built inside: their failure is a recorded result too
        task = spec.task_cls(spec.task_config, device)
        model = task.build_model()
        layers = [layer.describe() for layer in model.layers()]
        probes = applicable_probes(spec, task, model)
        used += [type(task), spec.task_cls.Config, type(model), *map(type, probes)]
        metrics, status = _train(spec, task, model, probes, rows, rid)
    except Exception as exc:  # a failed run is a result; the sweep goes on
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        if spec.run.progress:
            traceback.print_exc(file=sys.stderr)
    records = rows.to_records()
    steps = spec.task_config.steps
    chance = task.chance_loss() if task is not None else None
    record = _record(spec, status, error, used, provenance(device, time.perf_counter() - started))
    record["task_info"] |= {"chance_loss": chance, "constants": task.constants() if task is not None else {}}
    record["task_info"]["layers"] = layers  # probe-able layers in input->output order
    record["summary"] = _summary(records, metrics, steps)
    record["diagnosis"] = diagnose(records, status, steps, chance, spec.diagnosis, layers)
    return _write(spec, record, records)


def crashed(spec: RunSpec, error: str) -> dict[str, Any]:
    """Write and return the ``failed`` record of a run whose process died while it trained (a native
    crash: the study that ran it in a worker process names the signal in ``error``)."""
    return _write(spec, _record(spec, "failed", error, [spec.task_cls, *map(type, spec.mitigations)], None), [])


def _record(spec: RunSpec, status: str, error: str | None, used: list[type], prov: dict | None) -> dict[str, Any]:
    """A run.json with what ``spec`` says; ``prov`` None: the provenance of this process, no wall time."""
    prov = prov or provenance(torch.device("cpu" if spec.run.device == "auto" else spec.run.device), 0.0)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "status": status,
        "error": error,
        "task": spec.task_cls.name,
        "mitigations": [m.name for m in spec.mitigations],
        "seed": spec.run.seed,
        "settings": spec.settings,  # every setting, flat dotted keys, defaults included
        "task_info": {  # what the task declares, so a reader never looks the task up
            "headline_metrics": list(spec.task_cls.headline_metrics),
            "flow_metric": spec.task_cls.flow_metric,
            "validation_metric": spec.task_cls.validation_metric,
            "chance_loss": None,
            "constants": {},
            "layers": [],
        },
        "provenance": {**prov, "code": code.identity(used)},
        "summary": _summary([], {}, spec.task_config.steps),
        "diagnosis": None,
    }


def _write(spec: RunSpec, record: dict[str, Any], rows: list) -> dict[str, Any]:
    try:
        write_record(spec.run.results_dir, record, rows)
    except OSError as exc:  # read-only folder, full disk...: the result is reported, and the sweep goes on
        record["status"], record["error"] = "failed", f"record not written: {exc}"
    return record


def applicable_probes(spec: RunSpec, task, model) -> list:
    """The configured probes that ``task`` and ``model`` can serve."""
    probes = [p() for p in (PROBES.get(name) for name in spec.probe.names)]
    return [p for p in probes if p.applies(task, model)]


def _train(spec: RunSpec, task, model, probes: list, rows: Rows, rid: str) -> tuple[dict[str, float], str]:
    for m in spec.mitigations:
        m.init_model(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(spec.optim, task.param_groups(model), spec.mitigations)
    lr_factors = [m.lr_factor for m in spec.mitigations if type(m).lr_factor is not Mitigation.lr_factor]
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: float(np.prod([f(s) for f in lr_factors])))
        if lr_factors
        else None
    )
    ctx = ProbeContext(task=task, model=model, layers=model.layers(), params=params, rows=rows)
    schedule = set(log_schedule(task.steps, spec.probe.samples, spec.probe.linear_samples))
    evaluations = set(eval_schedule(task.steps, spec.probe.eval_samples, task.eval_cost(), spec.probe.eval_budget))
    generator = torch.Generator(device="cpu").manual_seed(spec.run.seed)
    batches = task.batches(generator)
    progress = Progress(rid[:8], task.steps, spec.run.progress)
    loss_sum = torch.zeros((), device=task.device)  # running sum since the last sample
    loss_count = 0
    # the largest global gradient L2 norm since the last check (NaN propagates): not finite when an entry is inf
    # or NaN, or when the norm itself overflows float32 (the grad_norm_global probe then records inf)
    grad_norms = torch.zeros((), device=task.device)
    for step in range(task.steps):
        sampling = step in schedule
        batch = next(batches)
        if sampling:
            ctx.step, ctx.batch = step, batch
            if step in evaluations:
                _record_eval(ctx, task, model)
            for p in probes:
                p.before_forward(ctx)
        loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        torch.maximum(grad_norms, global_norm(grads), out=grad_norms)  # before a mitigation can clamp it away
        if sampling:
            for p in probes:
                p.after_backward(ctx)
        for m in spec.mitigations:
            m.transform_grads(params)
        if sampling:
            for p in probes:
                p.after_transform(ctx)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for m in spec.mitigations:
            m.after_step(model)
        loss_sum += loss.detach()
        loss_count += 1
        if sampling:
            for p in probes:
                p.after_step(ctx)
            rows.add(step, "batch_loss", [""], loss_sum / loss_count)
        if sampling or step % CHECK_EVERY == 0:
            mean_loss = float(loss_sum) / loss_count
            grads_finite = bool(grad_norms.isfinite())
            if not np.isfinite(mean_loss) or not grads_finite or not bool(global_norm(params).isfinite()):
                what = "loss" if not np.isfinite(mean_loss) else "parameters" if grads_finite else "gradient"
                rows.add(step, "nonfinite", [what], torch.ones(1))
                return {}, "diverged"
            grad_norms.zero_()
            progress.update(step + 1, mean_loss)
        if sampling:
            loss_sum.zero_()
            loss_count = 0
    ctx.step = task.steps
    metrics = _record_eval(ctx, task, model)
    if not all(np.isfinite(v) for v in metrics.values()):
        return metrics, "diverged"
    return metrics, "completed"


def _record_eval(ctx: ProbeContext, task, model) -> dict[str, float]:
    metrics = task.evaluate(model)
    for name in sorted(metrics):
        ctx.rows.add(ctx.step, name, [""], torch.tensor(metrics[name]))
    return metrics


def _summary(records: list[tuple[int, str, str, float]], metrics: dict[str, float], steps: int) -> dict[str, Any]:
    ratio_init = next((v for s, m, _, v in records if m == "grad_ratio" and s == 0), None)
    summary: dict[str, Any] = {"grad_ratio_init": ratio_init, "steps": steps}
    summary["final_train_loss"] = metrics.get("train_loss")
    for name, value in metrics.items():
        summary.setdefault(name, value)
    return summary
