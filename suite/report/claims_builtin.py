"""The published claims vanex checks, each against the study cells that reproduce its setting.

Every predicate is judged on all seeds of each group (all-seed agreement, or a Welch confidence
interval through ``less``); ``vanex.report.claims`` re-checks it at half and double the learning rate.
A claim the records contradict stays here and is reported ✗ with its numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from vanex.registry import CLAIMS
from vanex.report.claims import STALLED, Cells, Claim, Group, Outcome, Superseded, count, fmt, less, stalls, trains
from vanex.science.bounds import COPY_RECALL, through_time_bound

MLP = {"task.depth": 20, "optim.lr": 0.05}
MLP_STEPS = 1000  # the deep MLP's budget (conf/task/deep_mlp.yaml) at the quick profile's scale


class GlorotSigmoidV1(Claim):
    paper = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks"
    where = "Sec. 3, Fig. 2"
    statement = "In a deep sigmoid net the gradient shrinks towards the input and training stalls."
    study = "mlp_vanishing"
    control = "sigmoid"
    cells = {"sigmoid": Cells((), MLP)}

    def predicate(self, g: dict[str, Group]) -> Outcome:
        s = g["sigmoid"]
        holds = all(v == "vanishing" for v in s.verdicts("init")) and stalls(s)
        numbers = (
            f"init vanishing {count(s.verdicts('init'), {'vanishing'})}, stalled "
            f"{count(s.verdicts(), {'stalled', 'diverged'})}; log10 init ratio {fmt(s.values('init_log10_grad_ratio'))}"
        )
        return Outcome(holds, numbers)


SHALLOW = {"task.depth": 4, "optim.lr": 0.05}


def _top_saturates(frame: pd.DataFrame) -> tuple[bool, float]:
    """(whether, in the first half of training after step 0, the top hidden layer has most units
    saturated and more than the bottom one; the top layer's largest saturated fraction there)."""
    hidden = sorted((c for c in frame.columns if str(c).startswith("hidden_")), key=lambda c: int(c[7:]))
    early = frame[(frame.index > 0) & (frame.index <= frame.index.max() / 2)]
    if not hidden or early.empty:
        return False, math.nan
    t, b = early[hidden[-1]], early[hidden[0]]
    return bool(((t > 0.5) & (t > b)).any()), float(t.max())


@CLAIMS.register("glorot2010_sigmoid")
class GlorotSigmoid(Claim):
    paper = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks"
    where = "Sec. 3.1, Fig. 2 (4 hidden layers, standard init); Sec. 3.2, Fig. 3 (tanh saturates bottom-up)"
    statement = (
        "With sigmoid units and the standard init, the top hidden layer of a 4-layer net saturates early in "
        "training (most units at 0) ahead of the layers below; with tanh it does not."
    )
    study = "mlp_vanishing"
    control = "tanh"
    metrics = ("act_saturated",)
    cells = {"sigmoid": Cells((), SHALLOW), "tanh": Cells(("tanh",), SHALLOW)}
    version = 2
    superseded = (
        Superseded(
            1,
            GlorotSigmoidV1,
            "v1 asked a 20-layer sigmoid net to stall, which its 10^-15.7 init ratio guarantees, and had no control; "
            "Glorot & Bengio's Fig. 2 is the saturation of the top hidden layer of a 4-layer net that trains",
        ),
    )

    def predicate(self, g: dict[str, Group]) -> Outcome:
        seen = {name: [_top_saturates(f) for f in g[name].series("act_saturated")] for name in g}
        holds = all(ok for ok, _ in seen["sigmoid"]) and not any(ok for ok, _ in seen["tanh"])
        numbers = "top hidden layer's largest saturated fraction in the first half: " + ", ".join(
            f"{name} {fmt(np.array([peak for _, peak in seen[name]]))} ({sum(ok for ok, _ in seen[name])}/"
            f"{len(seen[name])} top-first)"
            for name in seen
        )
        return Outcome(holds, numbers)


@CLAIMS.register("glorot2010_xavier_tanh")
class GlorotXavierTanh(Claim):
    paper = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks"
    where = "Sec. 4.2, Fig. 11"
    statement = "With tanh units, the normalised (Xavier) init trains a deep net better than the standard init."
    study = "mlp_vanishing"
    control = "standard"
    cells = {"standard": Cells(("tanh",), MLP), "xavier": Cells(("tanh", "xavier_init"), MLP)}

    def predicate(self, g: dict[str, Group]) -> Outcome:
        a, b = g["xavier"].values("final_train_loss"), g["standard"].values("final_train_loss")
        return Outcome(less(a, b), f"final loss xavier {fmt(a)} vs standard {fmt(b)}")


class HeInit30V1(Claim):
    paper = "He, Zhang, Ren & Sun 2015, Delving deep into rectifiers"
    where = "Fig. 3"
    statement = "A 30-layer ReLU net does not learn from Xavier init, and does from He init."
    study = "mlp_vanishing"
    cells = {  # v1 and v2 did not name the steps: the study trained no other budget at depth 30 then
        "xavier": Cells(("relu", "xavier_init"), {"task.depth": 30, "optim.lr": 0.05, "task.steps": MLP_STEPS}),
        "he": Cells(("relu", "he_init"), {"task.depth": 30, "optim.lr": 0.05, "task.steps": MLP_STEPS}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        x, h = g["xavier"], g["he"]
        holds = stalls(x) and trains(h)
        numbers = (
            f"xavier stalled {count(x.verdicts(), {'stalled', 'diverged'})}, loss {fmt(x.values('final_train_loss'))}; "
            f"he loss {fmt(h.values('final_train_loss'))} (chance {h.chance:.3g})"
        )
        return Outcome(holds, numbers)


class HeInit30V2(HeInit30V1):
    statement = "A 30-layer ReLU net stalls from Xavier init and does not from He init, which ends below Xavier."
    control = "xavier"

    def predicate(self, g: dict[str, Group]) -> Outcome:
        x, h = g["xavier"], g["he"]
        a, b = h.values("loss_vs_chance"), x.values("loss_vs_chance")
        holds = stalls(x) and not any(v in STALLED for v in h.verdicts()) and less(a, b)
        numbers = (
            f"xavier stalled {count(x.verdicts(), set(STALLED))}, he stalled {count(h.verdicts(), set(STALLED))}; "
            f"loss/chance he {fmt(a)} vs xavier {fmt(b)}"
        )
        return Outcome(holds, numbers)


@CLAIMS.register("he2015_init_30_layers")
class HeInit30(HeInit30V2):
    statement = (
        "A 30-layer ReLU net trained for 3000 steps (3x the task's budget) stalls from Xavier init and does not "
        "from He init, which ends below Xavier."
    )
    cells = {k: c.on(**{"task.steps": 3 * MLP_STEPS}) for k, c in HeInit30V1.cells.items()}  # quick-profile scale
    version = 3
    superseded = (
        Superseded(
            2,
            HeInit30V2,
            "at v2's 1000 steps the verdict turned on the numeric path on an Intel Xeon: one pinned He seed of 5 "
            "ended on a loss spike at 0.98 of chance (its batch losses had reached 1.3) and read stalled; on an "
            "AMD EPYC one Xavier seed of 3 left chance at half the rate. v3 trains 3x as long (Fig. 3 is about "
            "training to convergence: Xavier never leaves chance, He does), the remedy gers2000_forget_bias v2 took; "
            "chosen after seeing v2's runs, and it can fail on either half (a Xavier seed that leaves chance, a He "
            "seed that ends on a spike)",
        ),
        Superseded(
            1,
            HeInit30V1,
            "v1 asked every He seed to end below half of chance, which He et al.'s Fig. 3 does not state: the figure "
            "shows Xavier stalling and He converging",
        ),
    )


@CLAIMS.register("ioffe2015_batchnorm_sigmoid")
class IoffeBatchNorm(Claim):
    paper = "Ioffe & Szegedy 2015, Batch normalization"
    where = "Sec. 4.2 (sigmoid nets), Fig. 1"
    statement = "Batch normalisation makes a deep sigmoid net trainable where the plain net stalls."
    study = "mlp_vanishing"
    control = "plain"
    cells = {"plain": Cells((), MLP), "bn": Cells(("batchnorm",), MLP)}

    def predicate(self, g: dict[str, Group]) -> Outcome:
        p, b = g["plain"], g["bn"]
        numbers = f"batchnorm loss {fmt(b.values('final_train_loss'))} vs plain {fmt(p.values('final_train_loss'))}"
        return Outcome(stalls(p) and trains(b), numbers)


def _resnet(mitigations: tuple[str, ...], depth: int) -> Cells:
    return Cells(mitigations, {"task.depth": depth, "optim.lr": 0.05})  # the task's default rate


class HeDegradationV1(Claim):
    paper = "He, Zhang, Ren & Sun 2016, Deep residual learning"
    where = "Fig. 1, Fig. 6"
    statement = (
        "A plain 56-layer net trains to a higher training loss than a plain 20-layer one; "
        "with residual connections 56 layers train at least as well as 20."
    )
    study = "resnet_depth"
    cells = {
        "plain20": _resnet((), 20),
        "plain56": _resnet((), 56),
        "res20": _resnet(("residual",), 20),
        "res56": _resnet(("residual",), 56),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        p20, p56, r20, r56 = (g[k].values("final_train_loss") for k in ("plain20", "plain56", "res20", "res56"))
        holds = less(p20, p56) and not less(r20, r56)
        numbers = f"plain 20 {fmt(p20)} vs 56 {fmt(p56)}; residual 20 {fmt(r20)} vs 56 {fmt(r56)}"
        return Outcome(holds, numbers)


@CLAIMS.register("he2016_degradation")
class HeDegradation(HeDegradationV1):
    statement = (
        "A plain 56-layer net trains, but to a higher training loss than a plain 20-layer one; with residual "
        "connections 56 layers train at least as well as 20."
    )
    control = "plain20"
    version = 2
    superseded = (
        Superseded(
            1,
            HeDegradationV1,
            "v1 held when plain-56 stayed at chance; He et al.'s degradation is a plain-56 that trains, to a higher "
            "error than plain-20",
        ),
    )

    def predicate(self, g: dict[str, Group]) -> Outcome:
        p20, p56, r20, r56 = (g[k].values("final_train_loss") for k in ("plain20", "plain56", "res20", "res56"))
        learns = not any(v in STALLED for v in g["plain56"].verdicts())
        holds = learns and less(p20, p56) and not less(r20, r56)
        numbers = (
            f"plain-56 stalled {count(g['plain56'].verdicts(), set(STALLED))}; plain 20 {fmt(p20)} vs 56 {fmt(p56)}; "
            f"residual 20 {fmt(r20)} vs 56 {fmt(r56)}"
        )
        return Outcome(holds, numbers)


class _TrainsWithoutNorm(Claim):
    """A normalisation-free residual scheme trains a 56-layer ResNet where the plain
    normalisation-free net does not."""

    study = "resnet_depth"
    scheme: tuple[str, ...]

    def predicate(self, g: dict[str, Group]) -> Outcome:
        s, plain = g["scheme"], g["plain"]
        numbers = (
            f"{'+'.join(self.scheme)} loss {fmt(s.values('final_train_loss'))}; control "
            f"{'+'.join(self.cells['plain'].mitigations)} "
            f"{fmt(plain.values('final_train_loss'))} (chance {s.chance:.3g})"
        )
        return Outcome(trains(s, 0.1) and less(s.values("final_train_loss"), plain.values("final_train_loss")), numbers)


class FixupV1(_TrainsWithoutNorm):
    paper = "Zhang, Dauphin & Ma 2019, Fixup initialization"
    where = "Sec. 4, Table 1"
    statement = "Fixup trains a deep (56-layer) residual net without normalisation."
    scheme = ("fixup",)
    cells = {"scheme": _resnet(("fixup",), 56), "plain": _resnet(("no_norm",), 56)}


class ReZeroV1(_TrainsWithoutNorm):
    paper = "Bachlechner et al. 2020, ReZero is all you need"
    where = "Sec. 4, Table 2"
    statement = "ReZero (residual branches scaled by a learned scalar starting at 0) trains a deep net without norm."
    scheme = ("rezero", "no_norm")
    cells = {"scheme": _resnet(("rezero", "no_norm"), 56), "plain": _resnet(("no_norm",), 56)}


class SkipInitV1(_TrainsWithoutNorm):
    paper = "De & Smith 2020, Batch normalization biases residual blocks towards the identity"
    where = "Sec. 4, Table 2"
    statement = "SkipInit (a zero-initialised scalar on each residual branch) trains a deep ResNet without norm."
    scheme = ("skipinit", "no_norm")
    cells = {"scheme": _resnet(("skipinit", "no_norm"), 56), "plain": _resnet(("no_norm",), 56)}


RESIDUAL_CONTROL = (
    "v1's control was a net without skips and without normalisation, which fails for want of skips whatever the "
    "scheme does; the papers' control is a residual net without normalisation (Zhang et al. 2019, Sec. 2: its "
    "activations explode)"
)


RESIDUAL_NO_NORM = _resnet(("residual", "no_norm"), 56)


@CLAIMS.register("zhang2019_fixup")
class Fixup(FixupV1):
    cells = {"scheme": FixupV1.cells["scheme"], "plain": RESIDUAL_NO_NORM}
    control, version, superseded = "plain", 2, (Superseded(1, FixupV1, RESIDUAL_CONTROL),)


@CLAIMS.register("bachlechner2020_rezero")
class ReZero(ReZeroV1):
    cells = {"scheme": ReZeroV1.cells["scheme"], "plain": RESIDUAL_NO_NORM}
    control, version, superseded = "plain", 2, (Superseded(1, ReZeroV1, RESIDUAL_CONTROL),)


@CLAIMS.register("de2020_skipinit")
class SkipInit(SkipInitV1):
    cells = {"scheme": SkipInitV1.cells["scheme"], "plain": RESIDUAL_NO_NORM}
    control, version, superseded = "plain", 2, (Superseded(1, SkipInitV1, RESIDUAL_CONTROL),)


EXPLODING_MLP = {"task.activation": "relu", "task.weight_scale": 2.0, "optim.lr": 0.05, "optim.name": "sgd"}


class ClippingMLPV1(Claim):
    paper = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks"
    where = "Sec. 3.2 (clipping), applied to a deep MLP in the exploding phase"
    statement = "Gradient clipping keeps plain SGD from diverging when gradients explode, and training proceeds."
    study = "mlp_exploding"
    cells = {
        "plain": Cells((), EXPLODING_MLP),
        "norm": Cells(("clip_norm",), EXPLODING_MLP),
        "value": Cells(("clip_value",), {**EXPLODING_MLP, "mitigation.clip_value.clip": 0.5}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        p = g["plain"]
        blew_up = all(v in ("diverged", "exploding") for v in p.verdicts())
        rescued = trains(g["norm"], 1.0) and trains(g["value"], 1.0)
        numbers = (
            f"plain diverged/exploding {count(p.verdicts(), {'diverged', 'exploding'})}; loss clip_norm "
            f"{fmt(g['norm'].values('final_train_loss'))}, clip_value {fmt(g['value'].values('final_train_loss'))} "
            f"(chance {p.chance:.3g})"
        )
        return Outcome(blew_up and rescued, numbers)


ONE_THRESHOLD = (
    "v1 judged the MLP's rescue as below chance and the RNN's only as clipped below plain (where plain ended far "
    "above the memoryless baseline); both now use one threshold, a run trains when its final loss is below half "
    "of chance (vanex.science.stats.trained), and the RNN's unclipped control must not train"
)


class ClippingMLPV2(ClippingMLPV1):
    def predicate(self, g: dict[str, Group]) -> Outcome:
        p, n, v = g["plain"], g["norm"], g["value"]
        blew_up = all(x in ("diverged", "exploding") for x in p.verdicts())
        numbers = (
            f"plain diverged/exploding {count(p.verdicts(), {'diverged', 'exploding'})}; loss/chance clip_norm "
            f"{fmt(n.values('loss_vs_chance'))}, clip_value {fmt(v.values('loss_vs_chance'))}"
        )
        return Outcome(blew_up and trains(n) and trains(v), numbers)


MATCHED_CLIP = 0.003453  # 1 / sqrt(83,850 parameters of the 20-layer MLP): clip_value's global bound is clip_norm's 1


@CLAIMS.register("pascanu2013_clipping_mlp")
class ClippingMLP(ClippingMLPV2):
    statement = (
        "Gradient clipping keeps plain SGD from diverging when gradients explode, and training proceeds; clipping "
        "by value and by norm at the same bound on the global gradient norm (1)."
    )
    cells = {
        "plain": Cells((), EXPLODING_MLP),
        "norm": Cells(("clip_norm",), EXPLODING_MLP),
        "value": Cells(("clip_value",), {**EXPLODING_MLP, "mitigation.clip_value.clip": MATCHED_CLIP}),
    }
    control, version = "plain", 3
    superseded = (
        Superseded(
            2,
            ClippingMLPV2,
            "v2 clamped each entry to 0.5, a global norm of up to 0.5 sqrt(83,850) ~ 145 against clip_norm's 1; v3 "
            "clamps to 1/sqrt(83,850), the same global bound",
        ),
        Superseded(1, ClippingMLPV1, ONE_THRESHOLD),
    )


EXPLODING_RNN = {"optim.lr": 0.1, "optim.name": "sgd"}


class ClippingRNNV1(Claim):
    paper = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks"
    where = "Sec. 3.2, Sec. 4"
    statement = "With spectral radius > 1 the gradient through time explodes; clipping its norm lets SGD train."
    study = "rnn_exploding"
    cells = {"plain": Cells((), EXPLODING_RNN), "norm": Cells(("clip_norm",), EXPLODING_RNN)}

    def predicate(self, g: dict[str, Group]) -> Outcome:
        p, c = g["plain"], g["norm"]
        exploding = all(v == "exploding" for v in p.verdicts("init"))
        a, b = c.values("loss_vs_chance"), p.values("loss_vs_chance")
        numbers = f"init exploding {count(p.verdicts('init'), {'exploding'})}; loss/baseline clip_norm {fmt(a)}"
        numbers += f" vs plain {fmt(b)}"
        return Outcome(exploding and less(a, b), numbers)


@CLAIMS.register("pascanu2013_clipping_rnn")
class ClippingRNN(ClippingRNNV1):
    control, version, superseded = "plain", 2, (Superseded(1, ClippingRNNV1, ONE_THRESHOLD),)

    def predicate(self, g: dict[str, Group]) -> Outcome:
        p, c = g["plain"], g["norm"]
        exploding = all(v == "exploding" for v in p.verdicts("init"))
        a, b = c.values("loss_vs_chance"), p.values("loss_vs_chance")
        numbers = f"init exploding {count(p.verdicts('init'), {'exploding'})}; loss/baseline clip_norm {fmt(a)}"
        numbers += f" vs plain {fmt(b)}"
        return Outcome(exploding and trains(c) and not trains(p), numbers)


GAINS = (0.5, 0.9, 1.1, 1.5, 2.0)


@CLAIMS.register("pascanu2013_gain")
class RecurrentGain(Claim):
    paper = (
        "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks; Sompolinsky, "
        "Crisanti & Sommers 1988, Chaos in random neural networks"
    )
    where = (
        "Pascanu: Sec. 2.1 (spectral radius below 1 suffices for vanishing in the linear case, and for tanh a norm "
        "of W_rec below 1 does; above 1 is needed for exploding, not sufficient); that a random tanh RNN's gradient "
        "grows above gain 1 is the chaotic phase of Sompolinsky et al."
    )
    statement = (
        "At init, the gradient through a tanh RNN shrinks with the lag s - t at recurrent gains below 1 (0.5, 0.9) "
        "and grows with it above 1 (1.5, 2), every seed."
    )
    study = "rnn_init"
    neighbourhood = None
    metrics = ("grad_through_time",)
    control = "gain 0.9"
    cells = {f"gain {g:g}": Cells((), {"task.recurrent_gain": g}) for g in GAINS}

    def predicate(self, g: dict[str, Group]) -> Outcome:
        slopes = {name: np.array([_lag_slope(flow) for flow in g[name].step0("grad_through_time")]) for name in g}
        shrinks = all((slopes[f"gain {x:g}"] < 0).all() for x in (0.5, 0.9))
        grows = all((slopes[f"gain {x:g}"] > 0).all() for x in (1.5, 2.0))
        numbers = "log10 ||dL/dh_t|| per step of lag: " + ", ".join(f"{k} {fmt(v)}" for k, v in slopes.items())
        return Outcome(shrinks and grows, numbers)


def _lag_slope(flow, recall: int = COPY_RECALL) -> float:
    """Least-squares slope of log10 ||dL/dh_t|| / ||dL/dh_s|| against the lag s - t (s: first recall step)."""
    values = np.array([flow[f"t{t}"] for t in range(len(flow))], dtype=float)
    check = through_time_bound(values, 1.0, len(values) - recall)
    finite = np.isfinite(check["measured"])
    if finite.sum() < 2:
        return float("nan")
    return float(np.polyfit(check["lag"][finite], check["measured"][finite], 1)[0])


class GatingV1(Claim):
    paper = "Hochreiter & Schmidhuber 1997, Long short-term memory; Arjovsky, Shah & Bengio 2016 (copy task)"
    where = "Sec. 5 (experiments); Arjovsky et al. Fig. 1"
    statement = (
        "At a delay where the tanh RNN stays at the memoryless baseline, gated cells (LSTM with forget "
        "bias 1, GRU) go below it."
    )
    study = "rnn_copy"
    delay = 10  # within the 3000-step budget the LSTM leaves the baseline in every seed only here (README)
    cells = {
        "rnn": Cells((), {"task.delay": delay, "optim.lr": 0.002}),
        "lstm": Cells(("lstm",), {"task.delay": delay, "optim.lr": 0.002, "task.forget_bias": 1.0}),
        "gru": Cells(("gru",), {"task.delay": delay, "optim.lr": 0.002}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        r, lstm, gru = (g[k].values("loss_vs_chance") for k in ("rnn", "lstm", "gru"))
        below = lambda x: bool((x < 0.95).all())  # noqa: E731 - below 95% of the baseline in every seed
        holds = below(lstm) and below(gru) and not below(r)
        numbers = f"loss/baseline at T={self.delay}: tanh {fmt(r)}, LSTM {fmt(lstm)}, GRU {fmt(gru)}"
        return Outcome(holds, numbers)


COPY_STEPS = 3000  # the copy task's budget (conf/task/rnn_copy.yaml) at the quick profile's scale


class GatingV2(GatingV1):
    delay = 50  # fixed in advance: the task's default delay, where the tanh RNN stays at the baseline
    cells = {  # v2 did not name the steps: the study trained no other budget at T = 50 then
        "rnn": Cells((), {"task.delay": delay, "optim.lr": 0.002, "task.steps": COPY_STEPS}),
        "lstm": Cells(
            ("lstm",), {"task.delay": delay, "optim.lr": 0.002, "task.forget_bias": 1.0, "task.steps": COPY_STEPS}
        ),
        "gru": Cells(("gru",), {"task.delay": delay, "optim.lr": 0.002, "task.steps": COPY_STEPS}),
    }
    control = "rnn"


@CLAIMS.register("hochreiter1997_gating")
class Gating(GatingV2):
    version = 3
    superseded = (
        Superseded(
            1,
            GatingV1,
            "v1's delay T=10 was chosen after the result at T=50 was seen (LSTM below the baseline in 1 of 5 seeds); "
            "v2 restores T=50, fixed in advance",
        ),
        Superseded(
            2,
            GatingV2,
            "v3 names the 3000 steps v2 was judged at, as the study now also trains the LSTM at T=50 for 9000 steps "
            "(gers2000_forget_bias v2), which v2's cells would have taken in; the condition did not change",
        ),
    )


@CLAIMS.register("arjovsky2016_orthogonal")
class OrthogonalRecurrence(Claim):
    paper = "Arjovsky, Shah & Bengio 2016, Unitary evolution recurrent neural networks"
    where = "Sec. 2-3 (a unitary recurrence keeps the gradient's norm through time), Sec. 4.1, Fig. 1 (copy task)"
    statement = (
        "At a delay where a tanh RNN stays at the memoryless baseline, the same RNN with its recurrent matrix kept "
        "orthogonal throughout training goes below it; the same orthogonal init left unconstrained does not."
    )
    study = "rnn_copy"
    delay = 50  # fixed in advance: the task's default delay, where the tanh RNN stays at the baseline
    cells = {
        "orthogonal_init": Cells(("orthogonal_init",), {"task.delay": delay, "optim.lr": 0.002}),
        "orthogonal_rnn": Cells(("orthogonal_rnn",), {"task.delay": delay, "optim.lr": 0.002}),
    }
    control = "orthogonal_init"  # isolates the constraint from the init it starts from

    def predicate(self, g: dict[str, Group]) -> Outcome:
        kept, free = (g[k].values("loss_vs_chance") for k in ("orthogonal_rnn", "orthogonal_init"))
        below = lambda x: bool((x < 0.95).all())  # noqa: E731 - below 95% of the baseline in every seed
        numbers = f"loss/baseline at T={self.delay}: kept orthogonal {fmt(kept)}, orthogonal init only {fmt(free)}"
        return Outcome(below(kept) and not below(free), numbers)


class ForgetBiasV1(Claim):
    paper = (
        "Gers, Schmidhuber & Cummins 2000, Learning to forget; Jozefowicz, Zaremba & Sutskever 2015, "
        "An empirical exploration of recurrent network architectures"
    )
    where = "Gers et al. (the forget gate); Jozefowicz et al., abstract (a forget bias of 1 closes the LSTM-GRU gap)"
    statement = (
        "At T = 50, an LSTM whose forget-gate bias starts at 1 carries the gradient through time at least two "
        "orders of magnitude further back at initialisation than PyTorch's default init (bias ~ 0), and ends "
        "training lower relative to the memoryless baseline."
    )
    study = "rnn_copy"
    delay = 50  # fixed in advance: the task's default delay, as the gating claim
    cells = {
        "default": Cells(
            ("lstm",), {"task.delay": delay, "optim.lr": 0.002, "task.forget_bias": None, "task.steps": COPY_STEPS}
        ),
        "bias_1": Cells(
            ("lstm",), {"task.delay": delay, "optim.lr": 0.002, "task.forget_bias": 1.0, "task.steps": COPY_STEPS}
        ),
    }
    control = "default"
    metrics = ("grad_through_time",)

    def predicate(self, g: dict[str, Group]) -> Outcome:
        reach = {k: np.array([_reach(flow) for flow in g[k].step0("grad_through_time")]) for k in g}
        further = bool(np.min(reach["bias_1"]) - np.max(reach["default"]) >= 2)  # every seed of one vs the other
        ends = {k: g[k].values("loss_vs_chance") for k in g}
        numbers = (
            f"log10 ||dL/dh_0|| / ||dL/dh_first recall|| at init: bias 1 {fmt(reach['bias_1'])}, default "
            f"{fmt(reach['default'])}; loss/baseline at T={self.delay}: bias 1 {fmt(ends['bias_1'])}, default "
            f"{fmt(ends['default'])}"
        )
        return Outcome(further and less(ends["bias_1"], ends["default"]), numbers)


@CLAIMS.register("gers2000_forget_bias")
class ForgetBias(ForgetBiasV1):
    statement = (
        "At T = 50, an LSTM whose forget-gate bias starts at 1 carries the gradient through time at least two "
        "orders of magnitude further back at initialisation than PyTorch's default init (bias ~ 0), and ends "
        "9000 steps of training (3x the task's budget, where both leave the baseline) lower relative to the "
        "memoryless baseline."
    )
    steps = 3 * COPY_STEPS  # at the quick profile's scale: the stronger design the README named
    cells = {
        "default": ForgetBiasV1.cells["default"].on(**{"task.steps": steps}),
        "bias_1": ForgetBiasV1.cells["bias_1"].on(**{"task.steps": steps}),
    }
    version = 2
    superseded = (
        Superseded(
            1,
            ForgetBiasV1,
            "at v1's 3000 steps both LSTMs sit on the baseline plateau and the training half's verdict turned on "
            "the CPU's rounding (fragile on an AMD EPYC, ✗ on an Intel Xeon); v2 trains them 3x as long, the "
            "remedy the README named when v1 was reported fragile (one trial run of it, seen before v2 was "
            "adopted, found no difference between the two inits: v2 is expected to be ✗)",
        ),
    )


def _reach(flow, recall: int = COPY_RECALL) -> float:
    """log10 of the gradient reaching the first step over the gradient at the first recall step."""
    values = np.array([flow[f"t{t}"] for t in range(len(flow))], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.log10(values[0] / values[len(values) - recall]))


class IRNNV1(Claim):
    paper = "Le, Jaitly & Hinton 2015, A simple way to initialize recurrent networks of rectified linear units"
    where = "Sec. 4 (adding problem)"
    statement = "A ReLU RNN with identity recurrent init (IRNN) learns long-range dependencies a tanh RNN misses."
    study = "rnn_copy"
    control = "tanh"
    cells = {
        "tanh": Cells((), {"task.delay": 20, "optim.lr": 0.002}),
        "irnn": Cells(("identity_init", "relu"), {"task.delay": 20, "optim.lr": 0.002}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        i, t = g["irnn"].values("loss_vs_chance"), g["tanh"].values("loss_vs_chance")
        holds = bool((i < 0.95).all()) and less(i, t)
        return Outcome(holds, f"loss/baseline at T=20: IRNN {fmt(i)} vs tanh {fmt(t)} (leaving it: < 0.95)")


@CLAIMS.register("le2015_irnn")
class IRNN(Claim):
    paper = "Le, Jaitly & Hinton 2015, A simple way to initialize recurrent networks of rectified linear units"
    where = "Sec. 4.2, Table 2 (pixel-by-pixel MNIST: IRNN 97% against tanh RNN 35%)"
    statement = (
        "Reading the digits pixel by pixel (64 steps) under SGD with the gradient norm clipped at 1, an IRNN "
        "reaches a higher test accuracy than a tanh RNN."
    )
    study = "rnn_digits"
    control = "tanh"
    cells = {"tanh": Cells(("clip_norm",), {}), "irnn": Cells(("clip_norm", "identity_init", "relu"), {})}
    version = 2
    superseded = (
        Superseded(
            1,
            IRNNV1,
            "v1 tested the copy task under Adam; Le et al. train with SGD and clipping on the adding problem and "
            "pixel-by-pixel MNIST: v2 reads the digits pixel by pixel (64 steps, vanex.tasks.rnn_digits)",
        ),
    )

    def predicate(self, g: dict[str, Group]) -> Outcome:
        i, t = g["irnn"].values("test_accuracy"), g["tanh"].values("test_accuracy")
        return Outcome(less(t, i), f"test accuracy IRNN {fmt(i)} vs tanh {fmt(t)}")


TRANSFORMER = {"task.depth": 12, "optim.lr": 0.005}


class PostLNWarmupV1(Claim):
    paper = "Xiong et al. 2020, On layer normalization in the transformer architecture"
    where = "Sec. 3.1, Fig. 2"
    statement = "At a high learning rate Post-LN fails without warmup and trains with it; Pre-LN trains without warmup."
    study = "transformer_ln"
    control = "post"
    cells = {
        "post": Cells((), TRANSFORMER),
        "post_warmup": Cells(("warmup",), {**TRANSFORMER, "mitigation.warmup.steps": 100}),
        "pre": Cells(("pre_ln",), TRANSFORMER),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        post, warm, pre = g["post"], g["post_warmup"], g["pre"]
        holds = stalls(post) and trains(warm) and trains(pre)
        numbers = (
            f"loss/position-only: Post-LN {fmt(post.values('loss_vs_chance'))}, +warmup "
            f"{fmt(warm.values('loss_vs_chance'))}, Pre-LN {fmt(pre.values('loss_vs_chance'))}"
        )
        return Outcome(holds, numbers)


FAILING_LRS = (0.005, 0.01)  # where Post-LN collapses without warmup at 12 blocks, and double it
WARMUPS = (100, 200)  # a third and two thirds of the 300-step run (Xiong et al. sweep 4,000 and 8,000 steps)


def _ln(mitigations: tuple[str, ...], lr: float, warmup: int | None = None) -> Cells:
    extra = {"mitigation.warmup.steps": warmup} if warmup else {}
    return Cells(mitigations, {"task.depth": 12, "optim.lr": lr, **extra})


@CLAIMS.register("xiong2020_warmup")
class PostLNWarmup(Claim):
    paper = "Xiong et al. 2020, On layer normalization in the transformer architecture"
    where = "Sec. 3.1, Fig. 2 (warmup lengths 4,000 and 8,000 at two peak learning rates)"
    statement = (
        "At the learning rate where Post-LN fails without warmup (5e-3, 12 blocks) and at double it, Post-LN "
        "trains with the longer warmup (200 of 300 steps); Pre-LN trains without warmup. The shorter warmup (100) "
        "is reported beside it."
    )
    study = "transformer_ln"
    control = "post 0.005"
    neighbourhood = None  # the learning rates are the claim's own cells: at and above the failing rate
    cells = {
        **{f"post {lr:g}": _ln((), lr) for lr in FAILING_LRS},
        **{f"post+warmup{w} {lr:g}": _ln(("warmup",), lr, w) for lr in FAILING_LRS for w in WARMUPS},
        **{f"pre {lr:g}": _ln(("pre_ln",), lr) for lr in FAILING_LRS},
    }
    version = 2
    superseded = (
        Superseded(
            1,
            PostLNWarmupV1,
            "v1 judged at 5e-3 with its neighbourhood at half the rate, where Post-LN trains without warmup by "
            "design; v2 judges at the failing rate and double it, with the warmup length swept (100, 200 steps)",
        ),
    )

    def predicate(self, g: dict[str, Group]) -> Outcome:
        holds, parts = True, []
        for lr in FAILING_LRS:
            ratio = {name: fmt(g[f"{name} {lr:g}"].values("loss_vs_chance")) for name in ("post", "pre")}
            ratio |= {w: fmt(g[f"post+warmup{w} {lr:g}"].values("loss_vs_chance")) for w in WARMUPS}
            long = g[f"post+warmup{WARMUPS[-1]} {lr:g}"]
            holds &= stalls(g[f"post {lr:g}"]) and trains(long) and trains(g[f"pre {lr:g}"])
            warm = ", ".join(f"+warmup {w} {ratio[w]}" for w in WARMUPS)
            parts.append(f"lr {lr:g}: Post-LN {ratio['post']}, {warm}, Pre-LN {ratio['pre']}")
        return Outcome(holds, "loss/position-only: " + "; ".join(parts))


class PostLNInitGradientsV1(Claim):
    paper = "Xiong et al. 2020, On layer normalization in the transformer architecture"
    where = "Sec. 3.2 (Theorem 1), Fig. 3"
    statement = "At init, Post-LN's gradient norm grows with layer index (first/last << 1); Pre-LN's stays flat."
    study = "transformer_ln"
    neighbourhood = None
    cells = {"post": Cells((), TRANSFORMER), "pre": Cells(("pre_ln",), TRANSFORMER)}

    def predicate(self, g: dict[str, Group]) -> Outcome:
        post, pre = g["post"].values("init_log10_grad_ratio"), g["pre"].values("init_log10_grad_ratio")
        holds = bool((post < -0.5).all() and (np.abs(pre) < 0.5).all())
        return Outcome(holds, f"log10 first/last gradient at init: Post-LN {fmt(post)}, Pre-LN {fmt(pre)}")


DEPTHS = (3, 6, 12, 24)


@CLAIMS.register("xiong2020_init_gradients")
class PostLNInitGradients(Claim):
    paper = "Xiong et al. 2020, On layer normalization in the transformer architecture"
    where = "Sec. 3.2 (Theorem 1), Fig. 3"
    statement = (
        "At Xavier init the gradient of the last block's second MLP weight W_FFN2 is larger in Post-LN than in "
        "Pre-LN, by a ratio that grows with the number of blocks L (Theorem 1: Pre-LN's scales as 1/sqrt(L))."
    )
    study = "transformer_init"
    neighbourhood = None
    metrics = ("grad_norm",)
    control = "pre L=3"
    cells = {f"{o} L={L}": Cells(m, {"task.depth": L}) for L in DEPTHS for o, m in (("post", ()), ("pre", ("pre_ln",)))}
    version = 2
    superseded = (
        Superseded(
            1,
            PostLNInitGradientsV1,
            "v1 read the first/last ratio of every weight gradient under PyTorch's default init with a 10^-0.5 cut; "
            "Theorem 1 is about W_FFN2 under Xavier init, compared across L",
        ),
    )

    def predicate(self, g: dict[str, Group]) -> Outcome:
        ratios = []
        for L in DEPTHS:
            post, pre = (_last_ffn2(g[f"{o} L={L}"], L) for o in ("post", "pre"))
            ratios.append(float(np.exp(np.log(post).mean() - np.log(pre).mean())))  # geometric means over seeds
        holds = all(r > 1 for r in ratios) and all(b > a for a, b in zip(ratios, ratios[1:], strict=False))
        numbers = "Post-LN / Pre-LN ||dL/dW_FFN2|| of the last block: " + ", ".join(
            f"L={L} {r:.3g}" for L, r in zip(DEPTHS, ratios, strict=True)
        )
        return Outcome(holds, numbers)


def _last_ffn2(group: Group, depth: int) -> np.ndarray:
    """Per seed, the step-0 gradient norm of the last block's W_FFN2 (``block{L-1}.mlp_out``)."""
    return np.array([float(flow.get(f"block{depth - 1}.mlp_out", np.nan)) for flow in group.step0("grad_norm")])


@CLAIMS.register("wang2022_deepnorm")
class DeepNorm(Claim):
    paper = "Wang et al. 2022, DeepNet: scaling transformers to 1,000 layers"
    where = "Sec. 4, Fig. 1"
    statement = "DeepNorm stabilises a deep Post-LN transformer at a learning rate where plain Post-LN fails."
    study = "transformer_ln"
    control = "post"
    cells = {
        "post": Cells((), {"task.depth": 12, "optim.lr": 0.01}),
        "deepnorm": Cells(("deepnorm",), {"task.depth": 12, "optim.lr": 0.01}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        post, deep = g["post"], g["deepnorm"]
        numbers = (
            f"loss/position-only: DeepNorm {fmt(deep.values('loss_vs_chance'))} vs Post-LN "
            f"{fmt(post.values('loss_vs_chance'))}"
        )
        return Outcome(stalls(post) and trains(deep), numbers)


def _scaled(activation: str, sigma_w: float, **extra) -> Cells:
    return Cells((), {"task.activation": activation, "task.weight_scale": sigma_w, **extra})


class MeanFieldChiV1(Claim):
    paper = "Poole et al. 2016, Exponential expressivity in deep neural networks through transient chaos"
    where = "Sec. 3; Schoenholz et al. 2017, eq. (5)"
    statement = (
        "At init the backward signal changes by sqrt(chi_1) per layer, chi_1 = sigma_w^2 E[phi'(h)^2]: it "
        "vanishes for chi_1 < 1 and explodes for chi_1 > 1 (within 25% over 19 layers, every seed)."
    )
    study = "mlp_meanfield"
    neighbourhood = None
    metrics = ("grad_preact",)
    cells = {
        "tanh 0.5": _scaled("tanh", 0.5, **{"task.depth": 20}),
        "tanh 3": _scaled("tanh", 3.0, **{"task.depth": 20}),
        "relu 1": _scaled("relu", 1.0, **{"task.depth": 20}),
        "relu 2": _scaled("relu", 2.0, **{"task.depth": 20}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import chi1

        ok, parts = True, []
        for name, group in g.items():
            act, sw = name.split()
            expected = 0.5 * np.log10(chi1(act, float(sw)))
            measured = []
            for flow in group.step0("grad_preact"):
                v = np.log10(flow.to_numpy(dtype=float))
                measured.append((v[0] - v[-1]) / (len(v) - 1))
            measured = np.array(measured)
            ok &= bool((np.abs(measured - expected) <= 0.25 * abs(expected)).all())
            parts.append(f"{name}: {fmt(measured)} vs {expected:.3f} decades/layer")
        return Outcome(ok, "; ".join(parts))


SIGMA_B = 0.2236  # Poole et al.'s and Schoenholz et al.'s sigma_b^2 = 0.05 (the study's 80-layer cells)


@CLAIMS.register("poole2016_chi1")
class MeanFieldChi(MeanFieldChiV1):
    paper = (
        "Poole et al. 2016, Exponential expressivity in deep neural networks through transient chaos; Schoenholz "
        "et al. 2017, Deep information propagation"
    )
    where = "Poole: Sec. 3 (chi_1); Schoenholz: eq. (5) (the backward signal scales as chi_1 per layer)"
    statement = (
        "At init the backward signal changes by sqrt(chi_1) per layer, chi_1 = sigma_w^2 E[phi'(h)^2] at the "
        "fixed point q*: it vanishes for chi_1 < 1 and explodes for chi_1 > 1 (within 25%, every seed, over 19 "
        "layers with zero biases and over 79 tanh layers with sigma_b^2 = 0.05, where q* > 0)."
    )
    control = "tanh 0.5"
    version = 2
    superseded = (
        Superseded(
            1,
            MeanFieldChiV1,
            "v1's cells had zero biases, where tanh at sigma_w = 0.5 has q* = 0 and chi_1 = sigma_w^2 as for a "
            "linear net, and ReLU's chi_1 = sigma_w^2 / 2 holds for any Gaussian init: only tanh at sigma_w = 3 "
            "exercised E[phi'^2]. v2 adds tanh at the papers' sigma_b^2 = 0.05 and sigma_w^2 = 1 and 4, the "
            "study's 80-layer cells, after a review against the papers; no claim had read their backward signal, "
            "but the report's mlp_meanfield table already showed its first/last ratio (10^-5.20 and 10^5.11 over "
            "79 layers), so v2 was not chosen blind",
        ),
    )
    cells = {
        **MeanFieldChiV1.cells,
        "tanh 1, sigma_b 0.2236": _scaled("tanh", 1.0, **{"task.depth": 80, "task.bias_scale": SIGMA_B}),
        "tanh 2, sigma_b 0.2236": _scaled("tanh", 2.0, **{"task.depth": 80, "task.bias_scale": SIGMA_B}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import chi1

        ok, parts = True, []
        for name, group in g.items():
            cell = self.cells[name].settings
            act, sw, sb = cell["task.activation"], cell["task.weight_scale"], cell.get("task.bias_scale", 0.0)
            expected = 0.5 * np.log10(chi1(act, sw, sb))
            measured = _growth_per_layer(group)
            ok &= bool((np.abs(measured - expected) <= 0.25 * abs(expected)).all())
            parts.append(f"{name}: {fmt(measured)} vs {expected:.3f} decades/layer")
        return Outcome(ok, "; ".join(parts))


def _growth_per_layer(group: Group, metric: str = "grad_preact") -> np.ndarray:
    """Per seed, log10 of the step-0 series' first entry over its last, per step between entries."""
    out = []
    for flow in group.step0(metric):
        v = np.log10(flow.to_numpy(dtype=float))
        out.append((v[0] - v[-1]) / (len(v) - 1) if len(v) > 1 else np.nan)
    return np.array(out)


@CLAIMS.register("yang2019_batchnorm")
class BatchNormExplodes(Claim):
    paper = "Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, A mean field theory of batch normalization"
    where = "Sec. 3 (gradient backpropagation: ReLU's rate pi/(pi-1)); abstract (not removed by the weight variance)"
    statement = (
        "At init batch norm makes a ReLU net's backward signal grow towards the input by 1/2 log10(pi/(pi-1)) "
        "= 0.083 decades per layer whatever the weight scale (sigma_w 0.5 and 2, within 25% over 19 layers, "
        "every seed); without batch norm, under He init, it stays within a quarter of that rate of flat."
    )
    study = "mlp_meanfield"
    neighbourhood = None
    metrics = ("grad_preact",)
    control = "he, no batch norm"
    cells = {
        "bn 0.5": Cells(("batchnorm",), {"task.activation": "relu", "task.weight_scale": 0.5, "task.depth": 20}),
        "bn 2": Cells(("batchnorm",), {"task.activation": "relu", "task.weight_scale": 2.0, "task.depth": 20}),
        "he, no batch norm": _scaled("relu", 1.414, **{"task.depth": 20}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import batchnorm_relu_growth

        rate = batchnorm_relu_growth()
        ok, parts = True, []
        for name, group in g.items():
            measured = _growth_per_layer(group)
            target = 0.0 if name == self.control else rate
            ok &= bool((np.abs(measured - target) <= 0.25 * rate).all())
            parts.append(f"{name}: {fmt(measured)}")
        return Outcome(ok, f"decades/layer {'; '.join(parts)} (predicted {rate:.4f} with batch norm, 0 without)")


class EdgeOfChaosV1(Claim):
    paper = "Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, Deep information propagation"
    where = "Fig. 5"
    statement = (
        "Trainable depth diverges at the edge of chaos: an 80-layer tanh net trains at sigma_w = 1, not far off it."
    )
    study = "mlp_meanfield"
    control = "ordered"
    cells = {
        "critical": _scaled("tanh", 1.0, **{"task.depth": 80, "task.bias_scale": 0.0}),
        "ordered": _scaled("tanh", 0.5, **{"task.depth": 80, "task.bias_scale": 0.0}),
        "chaotic": _scaled("tanh", 3.0, **{"task.depth": 80, "task.bias_scale": 0.0}),
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        c, o, x = g["critical"], g["ordered"], g["chaotic"]
        holds = trains(c) and not trains(o) and not trains(x)
        numbers = (
            f"loss/chance at 80 layers: sigma_w=1 {fmt(c.values('loss_vs_chance'))}, 0.5 "
            f"{fmt(o.values('loss_vs_chance'))}, 3 {fmt(x.values('loss_vs_chance'))}"
        )
        return Outcome(holds, numbers)


SIGMA_B = 0.2236  # sigma_b^2 = 0.05, Schoenholz et al.'s bias variance
CRITICAL_SIGMA_W = 1.327  # sigma_w^2 = 1.76: chi_1 = 1 at sigma_b^2 = 0.05 (vanex.science.meanfield)


@CLAIMS.register("schoenholz2017_depth_scale")
class EdgeOfChaos(Claim):
    paper = "Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, Deep information propagation"
    where = "Fig. 5 (sigma_b^2 = 0.05, sigma_w^2 from 1 to 4; trainable up to about 6 xi_c layers)"
    statement = (
        "With sigma_b^2 = 0.05, an 80-layer tanh net trains at the critical sigma_w^2 = 1.76 and not at the ends "
        "of Fig. 5's range, sigma_w^2 = 1 and 4, where 6 xi_c (22 and 42 layers) is below its depth."
    )
    study = "mlp_meanfield"
    control = "ordered"
    cells = {
        "critical": _scaled("tanh", CRITICAL_SIGMA_W, **{"task.depth": 80, "task.bias_scale": SIGMA_B}),
        "ordered": _scaled("tanh", 1.0, **{"task.depth": 80, "task.bias_scale": SIGMA_B}),
        "chaotic": _scaled("tanh", 2.0, **{"task.depth": 80, "task.bias_scale": SIGMA_B}),
    }
    version = 2
    superseded = (
        Superseded(
            1,
            EdgeOfChaosV1,
            "v1 ran with zero biases, where tanh's critical point is degenerate (q_l -> 0); v2 takes Schoenholz et "
            "al.'s sigma_b^2 = 0.05, its critical point and the two ends of their sigma_w^2 axis",
        ),
    )

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import correlation_depth_scale

        c, o, x = g["critical"], g["ordered"], g["chaotic"]
        holds = trains(c) and not trains(o) and not trains(x)
        depth = {k: 6 * correlation_depth_scale("tanh", sw, SIGMA_B) for k, sw in (("o", 1.0), ("x", 2.0))}
        numbers = (
            f"loss/chance at 80 layers: sigma_w^2=1.76 {fmt(c.values('loss_vs_chance'))}, 1 (6 xi_c {depth['o']:.0f}) "
            f"{fmt(o.values('loss_vs_chance'))}, 4 (6 xi_c {depth['x']:.0f}) {fmt(x.values('loss_vs_chance'))}"
        )
        return Outcome(holds, numbers)


HANIN_DEPTHS, HANIN_WIDTHS = (10, 20, 40), (16, 64, 256)
DIGITS_INPUTS = 64  # the deep MLP's input: 8 x 8 digits
DIGITS_SECOND_MOMENT = 0.9531  # its training inputs' mean squared entry (task_info.constants; a test checks it)


def he_relu_grid(depths: tuple[int, ...], widths: tuple[int, ...]) -> dict[str, Cells]:
    """Cell groups "<depth>x<width>" of He-initialised ReLU MLPs (sigma_w = 1.414), one per depth and width."""
    return {
        f"{d}x{w}": Cells((), {"task.activation": "relu", "task.weight_scale": 1.414, "task.depth": d, "task.width": w})
        for d in depths
        for w in widths
    }


def _jacobian_stats(group: Group) -> np.ndarray:
    """Per seed (rows): the batch mean and variance of ln ||J(x)^T u||^2 over its inputs with a nonzero
    gradient, and the fraction with a zero one (the ``input_jacobian`` probe)."""
    names = ("jacobian_logsq_mean", "jacobian_logsq_var", "jacobian_zero_fraction")
    columns = [[s.iloc[0] if len(s) else np.nan for s in group.step0(name)] for name in names]
    return np.array(columns, dtype=float).T.reshape(-1, 3)


def pooled_variance(stats: np.ndarray) -> float:
    """Var of ln ||J(x)^T u||^2 over inputs and seeds pooled from per-seed (mean, variance, zero
    fraction) on equal batches: seeds weigh by their nonzero inputs; NaN without any."""
    weight = 1.0 - stats[:, 2]
    keep = weight > 0
    if not keep.any() or not np.isfinite(stats[keep]).all():
        return math.nan
    mean, var, w = stats[keep, 0], stats[keep, 1], weight[keep]
    centre = np.average(mean, weights=w)
    return float(np.average(var + (mean - centre) ** 2, weights=w))


def _slope(beta: np.ndarray, value: np.ndarray) -> float:
    return float(np.polyfit(beta, value, 1)[0])


@CLAIMS.register("hanin2018_width")
class WidthSetsGradientSpread(Claim):
    paper = (
        "Hanin 2018, Which neural net architectures give rise to exploding and vanishing gradients?; Hanin & Nica "
        "2018, Products of many large random matrices and gradients in deep neural networks"
    )
    where = (
        "Hanin: abstract and Theorem 1 (the spread of the input-output Jacobian is exponential in beta = sum of "
        "1/n_j); Hanin & Nica: abstract (ln of the norm of J applied to a fixed vector is asymptotically Gaussian, "
        "its variance linear in beta); the finite-width slope is vanex's (vanex.science.meanfield)"
    )
    statement = (
        "At He init, how much ln ||J(x)^T u||^2 of a ReLU net varies over inputs and initialisations grows with "
        "beta = sum of 1/width over the hidden layers at the rate finite-width theory predicts (fitted slope "
        "within a factor 1.5 of it, its 95% bootstrap interval above 0), so a deeper but wider net (40 x 256, "
        "beta 0.16) varies less than a shallower narrow one (10 x 16, beta 0.63)."
    )
    study = "mlp_width"
    neighbourhood = None
    metrics = ("jacobian_logsq_mean", "jacobian_logsq_var", "jacobian_zero_fraction")
    control = "40x256"
    cells = he_relu_grid(HANIN_DEPTHS, HANIN_WIDTHS)

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import relu_jacobian_log_variance

        shape = {name: tuple(map(int, name.split("x"))) for name in self.cells}
        beta = np.array([d / w for d, w in shape.values()])
        predicted = np.array([relu_jacobian_log_variance(d, w, DIGITS_INPUTS) for d, w in shape.values()])
        stats = {name: _jacobian_stats(g[name]) for name in self.cells}
        measured = np.array([pooled_variance(stats[name]) for name in self.cells])
        if not np.isfinite(measured).all():
            return Outcome(False, "no input_jacobian series in some cell (the probe did not run)")
        rng = np.random.default_rng(0)  # the bootstrap over seeds, the same on every machine
        slopes = []
        for _ in range(400):
            resampled = [pooled_variance(s[rng.integers(0, len(s), len(s))]) for s in stats.values()]
            slopes.append(_slope(beta, np.array(resampled)))
        slope, expected = _slope(beta, measured), _slope(beta, predicted)
        low, high = np.quantile(slopes, [0.025, 0.975])
        wide, narrow = (measured[list(self.cells).index(name)] for name in ("40x256", "10x16"))
        dead = np.concatenate([s[:, 2] for s in stats.values()])
        holds = bool(low > 0 and 2 / 3 <= slope / expected <= 1.5 and wide < narrow)
        cells = ", ".join(
            f"{name} {m:.3g} (theory {p:.3g})" for name, m, p in zip(self.cells, measured, predicted, strict=True)
        )
        return Outcome(
            holds,
            f"slope of the variance against beta {slope:.3g} [{low:.3g}, {high:.3g}] vs theory {expected:.3g} "
            f"(ratio {slope / expected:.2f}); 40x256 {wide:.3g} vs 10x16 {narrow:.3g}; per depth x width: {cells} "
            f"({len(g['10x16'])} seeds each; inputs with a zero gradient, left out: {dead.mean():.2%})",
        )


ISOMETRY_DEPTHS = (10, 20, 40, 80)
ISOMETRY_SETS = {  # name -> (mitigations, settings, activation, sigma_w, orthogonal)
    "tanh orthogonal": (("orthogonal_init",), {"task.activation": "tanh"}, "tanh", 1.0, True),
    "tanh gaussian": (
        (),
        {"task.activation": "tanh", "task.init": "scaled", "task.weight_scale": 1.0},
        "tanh",
        1.0,
        False,
    ),
    "relu gaussian": (
        (),
        {"task.activation": "relu", "task.init": "scaled", "task.weight_scale": 1.414},
        "relu",
        1.414,
        False,
    ),
}


def _scalar(group: Group, metric: str) -> np.ndarray:
    """Per seed, the step-0 value of a probe metric with one entry (NaN where it is missing)."""
    return np.array([s.iloc[0] if len(s) else np.nan for s in group.step0(metric)], dtype=float)


@CLAIMS.register("pennington2017_isometry")
class DynamicalIsometry(Claim):
    paper = (
        "Pennington, Schoenholz & Ganguli 2017, Resurrecting the sigmoid in deep learning through dynamical isometry; "
        "Saxe, McClelland & Ganguli 2014"
    )
    where = "abstract and Sec. 2 (the Jacobian's spectrum: ReLU nets cannot be isometric, tanh only with orthogonal W)"
    statement = (
        "At init, the normalised variance of the squared singular values of a critical tanh net's input-output "
        "Jacobian stays flat from 10 to 80 layers with orthogonal weights (growth below 2x, every seed within a "
        "factor 2 of the free-probability prediction), grows with depth with Gaussian weights and with ReLU "
        "(above 4x; the prediction: about 8x), and at 80 layers is at least 10x smaller than either in every seed."
    )
    study = "mlp_isometry"
    neighbourhood = None
    metrics = ("jacobian_sv2_mean", "jacobian_sv2_normvar")
    control = "tanh gaussian 80"
    cells = {
        f"{name} {depth}": Cells(mitigations, {**settings, "task.depth": depth})
        for name, (mitigations, settings, *_) in ISOMETRY_SETS.items()
        for depth in ISOMETRY_DEPTHS
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import jacobian_spectrum_variance

        spread = {name: _scalar(group, "jacobian_sv2_normvar") for name, group in g.items()}
        if not all(len(v) and np.isfinite(v).all() for v in spread.values()):
            return Outcome(False, "no jacobian_spectrum series in some cell (the probe did not run)")
        growth = {n: np.median(spread[f"{n} 80"]) / np.median(spread[f"{n} 10"]) for n in ISOMETRY_SETS}
        near, parts = True, []
        for name, (_, _, activation, sigma_w, orthogonal) in ISOMETRY_SETS.items():
            predicted = [
                jacobian_spectrum_variance(activation, sigma_w, DIGITS_SECOND_MOMENT, d, orthogonal)
                for d in ISOMETRY_DEPTHS
            ]
            measured = [np.median(spread[f"{name} {d}"]) for d in ISOMETRY_DEPTHS]
            if orthogonal:
                ratios = np.concatenate(
                    [spread[f"{name} {d}"] / p for d, p in zip(ISOMETRY_DEPTHS, predicted, strict=True)]
                )
                near = bool(((ratios >= 0.5) & (ratios <= 2.0)).all())
            shown = ", ".join(f"{m:.3g} ({p:.3g})" for m, p in zip(measured, predicted, strict=True))
            parts.append(f"{name} {shown}, growth {growth[name]:.2f}x")
        orth80 = spread["tanh orthogonal 80"].max()
        apart = all(10 * orth80 < spread[f"{n} 80"].min() for n in ("tanh gaussian", "relu gaussian"))
        holds = bool(
            growth["tanh orthogonal"] < 2
            and near
            and growth["tanh gaussian"] > 4
            and growth["relu gaussian"] > 4
            and apart
        )
        return Outcome(
            holds,
            f"median normalised variance of the squared singular values at depth "
            f"{', '.join(map(str, ISOMETRY_DEPTHS))}: measured (free-probability prediction): {'; '.join(parts)}; "
            "at 80 layers every orthogonal seed 10x below every "
            f"other: {'yes' if apart else 'no'} ({len(spread['tanh orthogonal 80'])} seeds each)",
        )


DYING_DEPTHS, DYING_WIDTHS = (5, 10, 20, 40), (3, 5, 10)


def born_dead(group: Group) -> np.ndarray:
    """Per seed, 1 where the net was constant on its step-0 batch (some hidden layer had every unit at
    0 on every input: ``act_dead`` of 1), else 0; NaN without an ``act_dead`` series."""
    return np.array(
        [float((s.to_numpy(dtype=float) >= 1.0).any()) if len(s) else np.nan for s in group.step0("act_dead")]
    )


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a share k/n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def share_difference_low(a: np.ndarray, b: np.ndarray) -> float:
    """The lower end of Newcombe's 95% interval (from the two Wilson intervals) of mean(a) - mean(b),
    a and b arrays of 0/1 outcomes."""
    (pa, (la, _)), (pb, (_, ub)) = ((x.mean(), wilson(x.sum(), len(x))) for x in (a, b))
    return float(pa - pb - math.hypot(pa - la, ub - pb))


@CLAIMS.register("lu2019_born_dead")
class BornDead(Claim):
    paper = "Lu, Shin, Su & Karniadakis 2019, Dying ReLU and initialization: theory and numerical examples"
    where = "abstract (a deep ReLU net initialised from symmetric distributions dies in probability as depth grows)"
    statement = (
        "At init with weights symmetric about 0 and zero biases, the share of narrow ReLU nets born dead "
        "(constant on a 64-example batch: a hidden layer with every unit at 0) grows with depth (from 5 to 40 "
        "hidden layers at widths 3 and 5, the 95% interval of the rise above 0) and falls with width (at every "
        "depth width 3 >= 5 >= 10, and 3 above 10 with the interval of the difference above 0), and in no cell "
        "exceeds the exact probability 1 - (1 - 2^-width)^depth that a layer is all at 0 for one input (Wilson "
        "95% interval)."
    )
    study = "mlp_dying"
    neighbourhood = None
    metrics = ("act_dead",)
    control = "5x10"
    cells = he_relu_grid(DYING_DEPTHS, DYING_WIDTHS)

    def predicate(self, g: dict[str, Group]) -> Outcome:
        from vanex.science.meanfield import relu_dead_probability

        dead = {name: born_dead(group) for name, group in g.items()}
        if not all(len(v) and np.isfinite(v).all() for v in dead.values()):
            return Outcome(False, "no act_dead series in some cell (the activation probe did not run)")
        share = {name: float(v.mean()) for name, v in dead.items()}
        deeper = {w: share_difference_low(dead[f"40x{w}"], dead[f"5x{w}"]) for w in (3, 5)}
        narrower = {d: share_difference_low(dead[f"{d}x3"], dead[f"{d}x10"]) for d in DYING_DEPTHS}
        ordered = all(share[f"{d}x3"] >= share[f"{d}x5"] >= share[f"{d}x10"] for d in DYING_DEPTHS)
        bound = {name: relu_dead_probability(d, w) for name, (d, w) in ((n, map(int, n.split("x"))) for n in g)}
        over = [name for name, v in dead.items() if wilson(v.sum(), len(v))[0] > bound[name]]
        holds = bool(all(x > 0 for x in deeper.values()) and all(x > 0 for x in narrower.values()) and ordered)
        holds = holds and not over
        cells = ", ".join(f"{name} {share[name]:.2f} (bound {bound[name]:.2f})" for name in g)
        return Outcome(
            holds,
            f"share born dead, depth x width: {cells} ({len(dead['5x10'])} seeds each); rise from 5 to 40 layers, "
            f"lower 95% end: width 3 {deeper[3]:+.2f}, width 5 {deeper[5]:+.2f}; width 3 over 10, lower end per "
            f"depth: {', '.join(f'{x:+.2f}' for x in narrower.values())}; ordered by width at every depth: "
            f"{'yes' if ordered else 'no'}; above the per-input bound: {', '.join(over) or 'none'}",
        )


SHATTER_DEPTHS = (1, 2, 4, 10, 24, 50)
SHATTER_SETS = {"feed-forward": ("batchnorm",), "resnet": ("batchnorm", "residual")}


def lag1(group: Group) -> np.ndarray:
    """Per seed, the step-0 autocorrelation at lag 1 of the input gradient along a line of inputs
    (the ``gradient_correlation`` probe); NaN where it is missing."""
    return np.array([s.get("lag1", np.nan) for s in group.step0("grad_autocorr")], dtype=float)


@CLAIMS.register("balduzzi2017_shattered")
class ShatteredGradients(Claim):
    paper = (
        "Balduzzi et al. 2017, The shattered gradients problem: if resnets are the answer, then what is the question?"
    )
    where = "abstract, Fig. 1-2 (1-layer and 24-layer feed-forward, 50-layer resnet; batch norm; 256 inputs on a line)"
    statement = (
        "At init with batch norm, the input gradient along a line of 256 inputs is shattered in a deep feed-forward "
        "ReLU net and not with skip connections: the mean autocorrelation between neighbouring points at 24 layers "
        "is below half the 1-layer net's (white rather than brown noise) and has fallen faster than 1/sqrt(L), while "
        "the 50-layer resnet's stays above half of it and falls no faster than 1/sqrt(L) (Balduzzi et al.'s rate "
        "with batch norm), and at 24 layers the resnet's exceeds the feed-forward net's (Welch 95% interval)."
    )
    study = "mlp_shattered"
    neighbourhood = None
    metrics = ("grad_autocorr",)
    control = "feed-forward 1"
    cells = {
        f"{name} {d}": Cells(mitigations, {"task.depth": d})
        for name, mitigations in SHATTER_SETS.items()
        for d in SHATTER_DEPTHS
        if not (name == "resnet" and d == 1)  # one layer has no skip: it is the feed-forward net
    }

    def predicate(self, g: dict[str, Group]) -> Outcome:
        rho = {name: lag1(group) for name, group in g.items()}
        if not all(len(v) and np.isfinite(v).all() for v in rho.values()):
            return Outcome(False, "no grad_autocorr series in some cell (the gradient_correlation probe did not run)")
        mean = {name: float(v.mean()) for name, v in rho.items()}
        one, plain, res = mean["feed-forward 1"], mean["feed-forward 24"], mean["resnet 50"]
        white = plain < one / 2 and plain / one < 24**-0.5
        brown = res > one / 2 and res / one >= 50**-0.5
        apart = less(rho["feed-forward 24"], rho["resnet 24"])
        holds = bool(white and brown and apart)
        per_depth = "; ".join(
            f"{name}: " + ", ".join(f"{d} {mean[f'{name} {d}']:.3f}" for d in SHATTER_DEPTHS if f"{name} {d}" in mean)
            for name in SHATTER_SETS
        )
        return Outcome(
            holds,
            f"mean lag-1 autocorrelation of the input gradient along the line, per depth: {per_depth}; "
            f"1 layer {fmt(rho['feed-forward 1'])}, feed-forward 24 {fmt(rho['feed-forward 24'])} "
            f"(ratio {plain / one:.3f}, 1/sqrt(24) = {24**-0.5:.3f}), resnet 24 {fmt(rho['resnet 24'])}, "
            f"resnet 50 {fmt(rho['resnet 50'])} (ratio {res / one:.3f}, 1/sqrt(50) = {50**-0.5:.3f})",
        )
