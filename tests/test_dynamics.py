"""Property tests of gradient dynamics through time and depth (issue: RNN, ResNet, transformer)."""

from __future__ import annotations

import math

import torch
from helpers import task_config
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from vanex.mitigations.recurrent import OrthogonalRecurrence
from vanex.tasks.deep_mlp import Block
from vanex.tasks.resnet import CifarResNet
from vanex.tasks.rnn_copy import BLANK, DELIMITER, RecurrentNet, baseline_loss, copy_batch
from vanex.tasks.transformer import TransformerNet

delays = st.integers(min_value=1, max_value=30)
hidden = st.integers(min_value=4, max_value=24)


@given(delays, st.integers(min_value=1, max_value=12), seeds)
def test_tbptt_leaves_exactly_zero_gradient_beyond_its_window(delay, window, seed):
    torch.manual_seed(seed)
    model = RecurrentNet(task_config("rnn_copy", delay=delay, hidden=16, tbptt=window))
    x, y = copy_batch(4, delay, torch.Generator().manual_seed(seed))
    taps: list[torch.Tensor] = []
    loss = torch.nn.functional.cross_entropy(model(x, taps)[:, -10:].flatten(0, 1), y[:, -10:].flatten())
    grads = torch.autograd.grad(loss, taps)
    length = delay + 20
    first_reachable = ((length - 10) // window) * window  # start of the window holding the first recall step
    for t, g in enumerate(grads):
        if t < first_reachable:
            assert torch.count_nonzero(g) == 0, t
    assert torch.count_nonzero(grads[-1]) > 0


@given(st.sampled_from(["rnn", "lstm", "gru"]), seeds)
def test_an_orthogonal_recurrence_stays_orthogonal_through_training_and_still_learns(cell, seed):
    """After every step the recurrent matrix (the candidate path's block of a gated cell) is orthogonal
    again, while the step still moved it (the projection does not undo training)."""
    torch.manual_seed(seed)
    mitigation = OrthogonalRecurrence()
    model = RecurrentNet(mitigation.adjust_config(task_config("rnn_copy", delay=5, hidden=12, cell=cell)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    eye = torch.eye(12)
    for step in range(5):
        before = model.recurrent_matrix().detach().clone()
        x, y = copy_batch(8, 5, torch.Generator().manual_seed(seed + step))
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
        mitigation.after_step(model)
        w = model.recurrent_matrix()
        torch.testing.assert_close(w @ w.T, eye, rtol=0, atol=1e-5)
        assert not torch.allclose(w, before)


@given(delays, st.sampled_from(["rnn", "lstm", "gru"]), st.sampled_from([0, 3, 7]), seeds)
def test_fused_and_unrolled_recurrences_give_the_same_gradients(delay, cell, window, seed):
    """Training uses the fused kernel; the probe unrolls the same parameters: they must agree."""
    torch.manual_seed(seed)
    model = RecurrentNet(task_config("rnn_copy", delay=delay, hidden=8, cell=cell, tbptt=window)).double()
    x, y = copy_batch(3, delay, torch.Generator().manual_seed(seed))
    grads = []
    for taps in (None, []):
        loss = torch.nn.functional.cross_entropy(model(x, taps).flatten(0, 1), y.flatten())
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@given(hidden, st.integers(min_value=1, max_value=15), seeds, st.floats(min_value=0.1, max_value=3.0))
def test_tanh_rnn_state_jacobian_is_bounded_by_sigma_max_power(h, steps, seed, gain):
    """Pascanu, Mikolov & Bengio (2013): ||dh_T/dh_k|| <= sigma_max(W_hh)^(T-k), since |tanh'| <= 1."""
    g = torch.Generator().manual_seed(seed)
    w_ih, w_hh = (
        torch.randn(h, 10, generator=g, dtype=torch.float64),
        torch.randn(h, h, generator=g, dtype=torch.float64),
    )
    w_hh *= gain / math.sqrt(h)
    b = torch.randn(h, generator=g, dtype=torch.float64)
    xs = torch.randn(steps, 1, 10, generator=g, dtype=torch.float64)
    h0 = torch.randn(1, h, generator=g, dtype=torch.float64)

    def unroll(state: torch.Tensor) -> torch.Tensor:
        for x in xs:
            state = torch._VF.rnn_tanh_cell(x, state, w_ih, w_hh, b, b)
        return state

    jac = torch.autograd.functional.jacobian(unroll, h0).reshape(h, h)
    sigma = torch.linalg.matrix_norm(w_hh, ord=2)
    assert torch.linalg.matrix_norm(jac, ord=2) <= sigma**steps * (1 + 1e-9)


@given(hidden, seeds)
def test_lstm_with_open_forget_and_closed_input_gate_carries_cell_state_unchanged(h, seed):
    """Hochreiter & Schmidhuber (1997): with f = 1 and i = 0, dc_t/dc_{t-1} = I (the constant error carousel)."""
    g = torch.Generator().manual_seed(seed)
    w_ih = torch.randn(4 * h, 10, generator=g, dtype=torch.float64) * 0.1
    w_hh = torch.randn(4 * h, h, generator=g, dtype=torch.float64) * 0.1
    b_ih = torch.zeros(4 * h, dtype=torch.float64)
    b_ih[:h], b_ih[h : 2 * h] = -40.0, 40.0  # gate order i, f, g, o: input closed, forget open
    x, h_prev = (
        torch.randn(1, 10, generator=g, dtype=torch.float64),
        torch.randn(1, h, generator=g, dtype=torch.float64),
    )
    c_prev = torch.randn(1, h, generator=g, dtype=torch.float64)

    def cell(c: torch.Tensor) -> torch.Tensor:
        return torch._VF.lstm_cell(x, (h_prev, c), w_ih, w_hh, b_ih, torch.zeros_like(b_ih))[1]

    jac = torch.autograd.functional.jacobian(cell, c_prev).reshape(h, h)
    torch.testing.assert_close(jac, torch.eye(h, dtype=torch.float64), rtol=0, atol=1e-12)


@given(st.integers(min_value=2, max_value=16), st.sampled_from(["tanh", "relu", "gelu"]), seeds)
def test_residual_block_jacobian_is_identity_plus_branch_jacobian(width, activation, seed):
    torch.manual_seed(seed)
    cfg = task_config("deep_mlp", width=width, activation=activation, residual="identity")
    block = Block(width, width, cfg).double()
    x = torch.randn(1, width, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(block, x).reshape(width, width)
    branch = torch.autograd.functional.jacobian(lambda v: block.act(block.norm(block.linear(v))), x).reshape(
        width, width
    )
    torch.testing.assert_close(jac, torch.eye(width, dtype=torch.float64) + branch, rtol=0, atol=1e-12)


@given(delays, st.integers(min_value=1, max_value=64), seeds)
def test_copy_batches_match_the_specification(delay, n, seed):
    x, y = copy_batch(n, delay, torch.Generator().manual_seed(seed))
    length = delay + 20
    assert x.shape == y.shape == (n, length)
    assert ((x[:, :10] >= 1) & (x[:, :10] <= 8)).all()  # 10 symbols from 8
    assert (x[:, 10 : delay + 9] == BLANK).all()  # T-1 blanks
    assert (x[:, delay + 9] == DELIMITER).all()  # the delimiter
    assert (x[:, -10:] == BLANK).all()  # 10 blanks while recalling
    assert (y[:, : delay + 10] == BLANK).all() and torch.equal(y[:, -10:], x[:, :10])


@given(delays)
def test_baseline_loss_is_the_memoryless_strategys_cross_entropy(delay):
    """Blanks for T+10 steps (certain), then uniform over the 8 symbols: 10 ln 8 / (T+20)."""
    x, y = copy_batch(256, delay, torch.Generator().manual_seed(delay))
    logits = torch.full((256, delay + 20, 9), -1e9, dtype=torch.float64)
    logits[:, : delay + 10, BLANK] = 0.0  # certain blank
    logits[:, -10:, 1:] = 0.0  # uniform over the symbols 1..8
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert math.isclose(float(ce), baseline_loss(delay), rel_tol=1e-12)


@given(st.integers(min_value=1, max_value=8), seeds)
def test_rezero_transformer_is_the_identity_at_initialisation(depth, seed):
    torch.manual_seed(seed)
    model = TransformerNet(task_config("transformer", depth=depth, residual="rezero"))
    h = torch.randn(2, 8, 64)
    out = h
    for block in model.blocks:
        out = block(out)
    assert torch.equal(out, h)


@given(st.sampled_from([8, 20]), st.sampled_from(["rezero", "skipinit", "fixup"]), seeds)
def test_rezero_skipinit_and_fixup_branches_output_zero_at_initialisation(depth, scheme, seed):
    """ReZero/SkipInit: alpha = 0; Fixup: the branch's last conv is zero (Zhang et al. 2019): the
    residual sum adds nothing to the skip path at initialisation."""
    torch.manual_seed(seed)
    model = CifarResNet(task_config("resnet", depth=depth, residual=scheme, norm="none"))
    x = torch.randn(4, model.blocks[0].conv1.in_channels, 8, 8)
    for block in model.blocks:
        skip = block.shortcut(x)
        assert torch.equal(block.sum(skip, block.branch(x)), skip)
        if scheme == "rezero":  # and the block is the identity wherever the shape is kept
            assert torch.equal(block(x), block.shortcut(x))
        x = block(x)
