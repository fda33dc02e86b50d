"""PenaltyInjection on a toy model under torch's reentrant checkpointing, without any Trainer: the gradient of
``scale * (task loss + factor * penalty)`` equals the one computed without checkpointing, for any scale applied to the
loss after it is formed (what a loss scaler or gradient accumulation does), and the input-site variant too."""

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trl_decpo.capture import ActivationCapture, PenaltyInjection, ResolvedSite, Site, build_row_index
from trl_decpo.capture.injection import in_backward
from trl_decpo.penalty import decorrelation_penalty


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(torch.tanh(self.up(x)))


class Toy(nn.Module):
    def __init__(self, width=8, layers=3, reentrant=False):
        super().__init__()
        self.embed = nn.Embedding(20, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(layers))
        self.reentrant = reentrant

    def forward(self, ids):
        h = self.embed(ids)
        for block in self.layers:
            h = checkpoint(block, h, use_reentrant=True) if self.reentrant else block(h)
        return h.pow(2).mean()


def sites(model, path="up", capture_input=False):
    return [
        ResolvedSite(i, "layers", f"layers.{i}.{path}", getattr(block, path), Site(path, capture_input))
        for i, block in enumerate(model.layers)
    ]


def gradients(
    reentrant: bool, scale: float, factor: float, layers=(0, 2), path="up", capture_input=False, pooling="last",
    target="samples",
):  # fmt: skip
    torch.manual_seed(0)
    model = Toy(reentrant=reentrant)
    ids = torch.randint(0, 20, (4, 5))
    completion = torch.tensor([[0, 0, 1, 1, 1]] * 4)
    max_rows = 12 if pooling == "tokens" else None
    index = build_row_index(
        pooling, "both", ids, attention_mask=torch.ones_like(ids), completion_mask=completion, max_rows=max_rows
    )
    chosen = [s for s in sites(model, path, capture_input) if s.layer in layers]
    capture, injection = ActivationCapture(chosen), PenaltyInjection(chosen)
    with capture.capture(index) as rows:
        task = model(ids)
    penalty = sum(decorrelation_penalty(rows[layer], target=target) for layer in layers)
    loss = task + factor * penalty
    if capture.without_grad:
        injection.arm(sorted(capture.without_grad), index, lambda r: decorrelation_penalty(r, target=target), factor)
        loss = injection.probe(loss)
    (scale * loss).backward()
    missed = injection.disarm()
    return {n: p.grad for n, p in model.named_parameters()}, capture.without_grad, missed, penalty.item()


@pytest.mark.parametrize("scale", [1.0, 0.25, 1024.0])
def test_injected_gradient_equals_the_gradient_without_checkpointing(scale):
    plain, none_deferred, _, value = gradients(False, scale, factor=0.5)
    injected, deferred, missed, injected_value = gradients(True, scale, factor=0.5)
    assert none_deferred == set() and deferred == {0, 2} and missed == []
    assert injected_value == pytest.approx(value)
    for name in plain:
        assert torch.allclose(plain[name], injected[name], atol=1e-6, rtol=1e-5), name
    without_penalty, *_ = gradients(False, scale, factor=0.0)
    assert not torch.allclose(without_penalty["layers.0.up.weight"], injected["layers.0.up.weight"])


@pytest.mark.parametrize("pooling", ["last", "mean", "tokens"])
@pytest.mark.parametrize("target", ["samples", "features"])
def test_every_pooling_and_target_gives_the_gradient_without_checkpointing(pooling, target):
    plain, *_ = gradients(False, 3.0, factor=0.7, pooling=pooling, target=target)
    injected, deferred, missed, _ = gradients(True, 3.0, factor=0.7, pooling=pooling, target=target)
    assert deferred == {0, 2} and missed == []
    for name in plain:
        assert torch.allclose(plain[name], injected[name], atol=1e-6, rtol=1e-4), name
    without_penalty, *_ = gradients(False, 3.0, factor=0.0, pooling=pooling, target=target)
    assert not torch.allclose(without_penalty["layers.0.up.weight"], injected["layers.0.up.weight"])


def test_an_input_site_is_injected_too():
    plain, *_ = gradients(False, 2.0, factor=1.0, path="down", capture_input=True)
    injected, deferred, missed, _ = gradients(True, 2.0, factor=1.0, path="down", capture_input=True)
    assert deferred == {0, 2} and missed == []
    for name in plain:
        assert torch.allclose(plain[name], injected[name], atol=1e-6, rtol=1e-5), name


def test_in_backward_is_true_only_inside_a_recomputation():
    """Pins torch's private `_current_graph_task_id` (-1 outside the autograd engine), which tells a reentrant
    checkpoint's recomputation from a forward."""
    seen = []
    layer = nn.Linear(3, 3)
    layer.register_forward_hook(lambda *_: seen.append(in_backward()))
    x = torch.randn(2, 3, requires_grad=True)
    out = checkpoint(layer, x, use_reentrant=True)  # forward under no_grad
    layer(x)  # a forward with gradients, outside the engine
    out.sum().backward()  # the recomputation
    assert seen == [False, False, True]


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
def test_a_layer_never_recomputed_is_reported_by_disarm():
    model = Toy(reentrant=True)
    model.embed.requires_grad_(False)  # nothing before the checkpoints needs a gradient: no recomputation
    ids = torch.randint(0, 20, (4, 5))
    index = build_row_index("last", "both", ids, attention_mask=torch.ones_like(ids))
    chosen = sites(model)[:1]
    capture, injection = ActivationCapture(chosen), PenaltyInjection(chosen)
    with capture.capture(index) as rows:
        model(ids)
    injection.arm([0], index, decorrelation_penalty, 1.0)
    injection.probe(model(ids) + decorrelation_penalty(rows[0]) * 0)  # a forward outside the engine injects nothing
    assert injection.disarm() == [0]
