"""Property tests of the two-part diagnosis on synthetic probe series (suite/science/diagnosis.py)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from vanex.engine.probes import eval_schedule, log_schedule
from vanex.science.diagnosis import DiagnosisConfig, diagnose, held_median

CFG = DiagnosisConfig(
    vanishing_orders=2.0,
    exploding_orders=2.0,
    exploding_grad_norm=1e4,
    exploding_growth_orders=3.0,
    dead_fraction=0.5,
    stall_fraction=0.95,
    unstable_fraction=1.5,
)
CHANCE = 2.3
steps_st = st.integers(min_value=40, max_value=3000)
orders = st.floats(min_value=-12, max_value=12).filter(lambda x: abs(abs(x) - 2.0) > 0.05)  # not on a threshold


def series(steps: int, schedule: list[int], log_ratio, norm=lambda s: 1.0, loss: float = 0.5) -> list[tuple]:
    """Rows of a run whose ratio, gradient norm and loss follow the given functions of the step."""
    rows = []
    for s in schedule:
        rows += [(s, "grad_ratio", "", 10.0 ** log_ratio(s)), (s, "grad_norm_global", "", norm(s))]
    rows.append((steps, "train_loss", "", loss))
    return rows


@given(steps_st, st.floats(min_value=2.1, max_value=12), st.floats(min_value=0.0, max_value=0.7))
def test_a_ratio_that_explodes_for_most_of_the_later_half_is_exploding(steps, high, start):
    onset = max(1, int(start * steps))  # before 3/4 of the run: over more than half of the later half
    rows = series(steps, log_schedule(steps, 24, 8), lambda s: high if s >= onset else 0.0)
    training = diagnose(rows, "completed", steps, CHANCE, CFG)["training"]
    assert training["verdict"] == "exploding" and "exploding" in training["flags"]


@given(steps_st, st.floats(min_value=2.1, max_value=12), st.floats(min_value=4.1, max_value=12))
def test_one_transient_spike_is_not_exploding(steps, high, norm):
    """A single sampled step with a huge ratio and global norm, the rest calm: healthy (persistence)."""
    schedule = log_schedule(steps, 24, 8)
    spike = schedule[len(schedule) // 2]
    rows = series(steps, schedule, lambda s: high if s == spike else 0.0, norm=lambda s: 10**norm if s == spike else 1)
    assert diagnose(rows, "completed", steps, CHANCE, CFG)["training"]["verdict"] == "healthy"


@given(steps_st, st.floats(min_value=3.1, max_value=8))
def test_a_global_norm_that_grows_over_the_later_half_is_exploding(steps, growth):
    rows = series(
        steps, log_schedule(steps, 24, 8), lambda s: 0.0, norm=lambda s: 10.0 ** (growth * min(1.0, 2 * s / steps))
    )
    assert diagnose(rows, "completed", steps, CHANCE, CFG)["training"]["verdict"] == "exploding"


@given(steps_st)
def test_a_run_without_a_ratio_is_inconclusive(steps):
    rows = [(s, "grad_norm_global", "", 1.0) for s in log_schedule(steps, 24, 8)] + [(steps, "train_loss", "", 0.5)]
    diagnosis = diagnose(rows, "completed", steps, CHANCE, CFG)
    assert diagnosis["init"]["verdict"] == "inconclusive"
    assert diagnosis["training"]["verdict"] == "inconclusive"


@given(steps_st, orders, st.floats(min_value=0.95, max_value=1.49))
def test_a_stalled_loss_is_stalled_whatever_its_ratio_and_says_what_else_holds(steps, log_ratio, loss_fraction):
    rows = series(steps, log_schedule(steps, 24, 8), lambda s: log_ratio, loss=loss_fraction * CHANCE)
    training = diagnose(rows, "completed", steps, CHANCE, CFG)["training"]
    assert training["verdict"] == "stalled"
    other = "vanishing" if log_ratio <= -2 else "exploding" if log_ratio >= 2 else None
    assert training["label"] == ("stalled" if other is None else f"stalled (+{other})")


@given(steps_st, st.floats(min_value=1.5, max_value=10.0))
def test_a_loss_far_above_chance_is_unstable_not_stalled(steps, loss_fraction):
    rows = series(steps, log_schedule(steps, 24, 8), lambda s: 0.0, loss=loss_fraction * CHANCE)
    training = diagnose(rows, "completed", steps, CHANCE, CFG)["training"]
    assert training["verdict"] == "unstable" and "stalled" not in training["flags"]


@given(
    steps_st,
    orders.filter(lambda x: x < 2),
    orders,
    st.floats(min_value=0.0, max_value=0.25),
    st.integers(min_value=2, max_value=40),
)
def test_verdicts_do_not_depend_on_the_sampling_density(steps, early, late, switch, samples):
    """Regimes that settle before mid-run (a brief early explosion is the one thing only a dense
    schedule can catch, so the early regime does not explode): sparse and dense schedules agree."""

    def log_ratio(s: int) -> float:
        return early if s < switch * steps else late

    verdicts = set()
    for schedule in (log_schedule(steps, samples, 2), log_schedule(steps, 200, 50), list(range(steps))):
        d = diagnose(series(steps, schedule, log_ratio), "completed", steps, CHANCE, CFG)
        verdicts.add((d["init"]["verdict"], d["training"]["verdict"]))
    assert len(verdicts) == 1


@given(orders)
def test_init_verdict_follows_the_step_0_ratio_without_a_backward_probe(log_ratio):
    d = diagnose(series(100, [0, 50, 99], lambda s: log_ratio), "completed", 100, CHANCE, CFG)["init"]
    expected = "vanishing" if log_ratio <= -2 else "exploding" if log_ratio >= 2 else "stable"
    assert d["verdict"] == expected and math.isclose(d["log10_grad_ratio"], log_ratio, abs_tol=1e-9)
    assert d["signal"] == "flow ratio"


LAYERS = [{"name": "in", "hidden": False, "kind": "in"}] + [
    {"name": f"h{i}", "hidden": True, "kind": "conv1" if i % 2 == 0 else "conv2"} for i in range(10)
]


@given(orders, st.floats(min_value=-1.5, max_value=1.5))
def test_init_verdict_reads_the_backward_signal_not_the_weight_gradient(backward, weight):
    """A ReLU net: weight gradients flat (forward and backward growth cancel), the backward signal
    ||dL/dh_l|| grows or shrinks; the verdict follows the signal, first over last hidden layer of one kind."""
    rows = series(100, [0, 50, 99], lambda s: weight)
    for i, layer in enumerate(LAYERS[1:]):
        if layer["kind"] == "conv1":  # h0, h2, ..., h8: the signal falls geometrically towards the output
            rows.append((0, "grad_preact", layer["name"], 10.0 ** (backward * (1 - i / 8))))
        else:  # the other kind carries a decoy that must not be compared with conv1
            rows.append((0, "grad_preact", layer["name"], 1e9))
    d = diagnose(rows, "completed", 100, CHANCE, CFG, LAYERS)["init"]
    expected = "vanishing" if backward <= -2 else "exploding" if backward >= 2 else "stable"
    assert d["signal"] == "grad_preact" and math.isclose(d["log10_backward_ratio"], backward, abs_tol=1e-9)
    assert d["verdict"] == expected


def test_a_huge_step_0_gradient_norm_is_exploding_at_init():
    rows = series(100, [0, 50, 99], lambda s: 0.0, norm=lambda s: 3e4 if s == 0 else 1.0)
    assert diagnose(rows, "completed", 100, CHANCE, CFG)["init"]["verdict"] == "exploding"


def test_a_diverged_run_is_diverged_and_a_failed_one_has_no_diagnosis():
    rows = series(100, [0, 10], lambda s: 0.0) + [(10, "grad_norm_global", "", math.nan)]
    assert diagnose(rows, "diverged", 100, CHANCE, CFG)["training"]["verdict"] == "diverged"
    assert diagnose(rows, "failed", 100, CHANCE, CFG) is None


@given(st.lists(st.tuples(st.integers(0, 1000), st.floats(-10, 10)), min_size=1, max_size=30, unique_by=lambda t: t[0]))
def test_held_median_is_a_value_of_the_series_and_ignores_duplicated_samples(points):
    points = sorted(points)
    median = held_median(points, 0, 1001)
    assert median in [v for _, v in points]
    assert held_median(sorted(points + [(s + 0.5, v) for s, v in points]), 0, 1001) == median


@given(
    st.integers(1, 20_000),
    st.integers(0, 50),
    st.one_of(st.just(0.0), st.floats(0.01, 1000)),
    st.floats(0, 1),
)
def test_evaluations_stay_within_their_budget(steps, samples, cost, budget):
    """Evaluations before the final one: from step 0, log-spaced, never the last step (the final
    evaluation follows it), at most ``samples``, and costing at most ``budget`` of the training."""
    points = eval_schedule(steps, samples, cost, budget)
    assert points == sorted(set(points)) and all(0 <= s < steps - 1 for s in points)
    assert len(points) <= samples and len(points) * cost <= budget * steps + 1e-9
    if points:
        assert points[0] == 0
    if cost == 0 and samples and steps > 1:  # cheap evaluations: no budget applies
        assert points
