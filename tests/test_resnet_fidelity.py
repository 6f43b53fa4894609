"""The resnet task against its sources: He et al. (2016)'s training recipe as the default, and Fixup
as in the official implementation (github.com/hongyi-zhang/Fixup, ``cifar/models/fixup_resnet_cifar.py``
for the model and initialisation, ``cifar/cifar_train.py`` for the learning rate of the scalars)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import task_config
from vanex.engine.config import compose, prepare
from vanex.engine.runner import make_optimizer
from vanex.tasks.resnet import CifarResNet, ResNet


def fixup_net(depth: int = 56, seed: int = 0) -> CifarResNet:
    torch.manual_seed(seed)
    return CifarResNet(task_config("resnet", depth=depth, residual="fixup", norm="none", width=16))


def test_default_optimiser_is_he_et_al_sgd_with_momentum_and_weight_decay():
    """He et al. 2016, sec. 4.2: SGD, momentum 0.9, weight decay 1e-4, batch 128."""
    spec = prepare(compose(["task=resnet", "progress=false"]))
    assert spec.optim.name == "sgd"
    assert spec.optim.kwargs == {"momentum": 0.9, "weight_decay": 1e-4}
    assert spec.optim.lr == pytest.approx(0.05)  # half He et al.'s 0.1 (see conf/task/resnet.yaml)
    assert spec.task_config.batch_size == 128
    assert spec.settings["optim.momentum"] == 0.9 and spec.settings["optim.weight_decay"] == 1e-4
    other = prepare(compose(["task=deep_mlp", "progress=false"]))  # the shared SGD default is unchanged
    assert other.optim.kwargs == {"momentum": 0.0, "weight_decay": 0.0}


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_another_optimiser_replaces_the_resnet_recipe_whole(name):
    """The recipe is an optim group of its own (sgd_he2016), so no SGD-only key leaks into Adam."""
    spec = prepare(compose(["task=resnet", f"optim={name}", "progress=false"]))
    plain = prepare(compose(["task=deep_mlp", f"optim={name}", "progress=false"]))
    assert spec.optim.name == name
    assert {k: v for k, v in spec.settings.items() if k.startswith("optim.")} == {
        k: v for k, v in plain.settings.items() if k.startswith("optim.")
    }


def test_fixup_scalars_are_present_zero_biases_and_unit_multipliers():
    """Official code: bias1a, bias1b, bias2a, bias2b and scale in every block; bias1 after the stem
    convolution and bias2 before the classifier; no normalisation anywhere."""
    model = fixup_net()
    assert torch.equal(model.stem_bias, torch.zeros(1)) and torch.equal(model.head_bias, torch.zeros(1))
    for b in model.blocks:
        for p in (b.bias1a, b.bias1b, b.bias2a, b.bias2b):
            assert p.shape == (1,) and torch.equal(p, torch.zeros(1))
        assert torch.equal(b.sum.scale.detach(), torch.ones(()))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_fixup_zero_layers_are_each_branch_last_conv_and_the_classifier():
    model = fixup_net()
    for b in model.blocks:
        assert torch.count_nonzero(b.conv2.weight) == 0
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0


@pytest.mark.parametrize("depth", [20, 56])
def test_fixup_first_conv_is_he_fan_out_scaled_by_l_to_minus_half(depth):
    """std = sqrt(2 / (out_channels * 3 * 3)) * L^(-1/(2m-2)), m = 2, L = number of residual branches.
    The blocks that double the channels tell fan-out from fan-in (their stds differ by sqrt(2))."""
    model = fixup_net(depth)
    n_branches = len(model.blocks)
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for b in model.blocks:
        by_shape.setdefault(tuple(b.conv1.weight.shape), []).append(b.conv1.weight.detach().flatten())
    assert len(by_shape) == 5  # (16,16), (32,16), (32,32), (64,32), (64,64) at width 16
    for shape, weights in by_shape.items():
        w = torch.cat(weights)
        fan_out, fan_in = shape[0] * shape[2] * shape[3], shape[1] * shape[2] * shape[3]
        expected = math.sqrt(2.0 / fan_out) * n_branches**-0.5
        rel_err = 4.0 / math.sqrt(2 * w.numel())  # four standard errors of a sample std
        assert float(w.std()) == pytest.approx(expected, rel=rel_err), shape
        assert abs(float(w.mean())) < 4.0 * expected / math.sqrt(w.numel())
        if fan_in != fan_out:
            fan_in_std = math.sqrt(2.0 / fan_in) * n_branches**-0.5
            assert abs(float(w.std()) - expected) < abs(float(w.std()) - fan_in_std)


def official_fixup_forward(model: CifarResNet, x: torch.Tensor) -> torch.Tensor:
    """FixupResNet.forward of the official code, transcribed (our blocks' parameters, option-A
    padding written with F.pad where the official code concatenates zeros after AvgPool2d(1, 2))."""
    out = F.relu(model.stem(x.view(-1, 1, 8, 8)) + model.stem_bias)
    for b in model.blocks:
        identity = out
        y = F.relu(b.conv1(out + b.bias1a) + b.bias1b)
        y = b.conv2(y + b.bias2a)
        y = y * b.sum.scale + b.bias2b
        if b.stride != 1:
            identity = F.avg_pool2d(out + b.bias1a, 1, stride=b.stride)
            identity = torch.cat((identity, torch.zeros_like(identity)), 1)
        out = F.relu(y + identity)
    return model.head(out.mean(dim=(2, 3)) + model.head_bias)


def test_fixup_forward_matches_the_official_block_with_every_scalar_in_play():
    model = fixup_net(depth=20)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move every parameter off its initial value, so each placement matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    x = torch.randn(5, 64, generator=gen)
    torch.testing.assert_close(model(x), official_fixup_forward(model, x), rtol=1e-4, atol=1e-5)  # sums reordered


def test_fixup_scalars_train_at_a_tenth_of_the_learning_rate():
    """cifar_train.py: parameters whose names contain 'bias' or 'scale' get lr base_lr / 10, the rest
    the base lr; momentum 0.9 and weight decay for all."""
    spec = prepare(compose(["task=resnet", "mitigation=[fixup]", "task.depth=20", "progress=false"]))
    task = ResNet(spec.task_config, torch.device("cpu"))
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = make_optimizer(spec.optim, task.param_groups(model), spec.mitigations)
    official_scalars = {id(p) for n, p in model.named_parameters() if "bias" in n or "scale" in n}
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert set(lr_of) == {id(p) for p in model.parameters()}
    for p in model.parameters():
        assert lr_of[id(p)] == pytest.approx(spec.optim.lr * (0.1 if id(p) in official_scalars else 1.0))
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 1e-4 for g in optimizer.param_groups)
    assert len(official_scalars) == 5 * len(model.blocks) + 3  # per block 4 biases + scale; stem, head, fc bias


def test_other_schemes_use_one_group_at_the_base_learning_rate():
    spec = prepare(compose(["task=resnet", "mitigation=[residual]", "task.depth=8", "progress=false"]))
    task = ResNet(spec.task_config, torch.device("cpu"))
    model = task.build_model()
    optimizer = make_optimizer(spec.optim, task.param_groups(model), spec.mitigations)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == spec.optim.lr
