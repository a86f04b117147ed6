"""The non-finite guard (solo_ext.utils.nonfinite): a real non-finite gradient never reaches the
weights. Fused AdamW skips the update in its kernel (found_inf); any other optimizer steps on zero
gradients; the host reads the flag only when asked, and the error names the first bad step and
the component."""

import pytest
import torch

from solo_ext.optim.factory import build_optimizer
from solo_ext.utils.errors import NonFiniteLossError
from solo_ext.utils.nonfinite import NonFiniteGuard


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def _step(model, optimizer, guard, scale, step):
    """One training step whose loss is multiplied by ``scale`` (inf: a real overflow in backward)."""
    optimizer.zero_grad()
    value = model(torch.ones(2, 4)).pow(2).mean()
    total = value * scale
    guard.observe(total, {"train_reconstruction_loss": value * scale, "train_class_loss": value})
    total.backward()
    guard.protect(optimizer, step)
    optimizer.step()


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_an_overflowing_step_leaves_the_weights_finite_and_is_reported(name):
    model = _model()
    optimizer = build_optimizer(name, [{"params": list(model.parameters())}], 0.1, 0.0, {})
    guard = NonFiniteGuard()
    _step(model, optimizer, guard, 1.0, 0)
    guard.raise_if_tripped(0)  # nothing to report
    before = [p.detach().clone() for p in model.parameters()]
    _step(model, optimizer, guard, float("inf"), 1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if name == "adamw":  # fused: the update is skipped
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    _step(model, optimizer, guard, 1.0, 2)  # a later good step does not hide the first bad one
    with pytest.raises(
        NonFiniteLossError, match=r"global step 1 \(epoch 0 or before\) in train_reconstruction_loss;"
    ):
        guard.raise_if_tripped(0)


def test_sgd_steps_on_zero_gradients():
    # without momentum or weight decay a zero-gradient step changes nothing
    model = _model()
    optimizer = build_optimizer("sgd", [{"params": list(model.parameters())}], 0.1, 0.0, {})
    guard = NonFiniteGuard()
    before = [p.detach().clone() for p in model.parameters()]
    _step(model, optimizer, guard, float("nan"), 0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


def test_a_finite_step_is_left_alone():
    model, reference = _model(), _model()
    optimizers = [
        build_optimizer("sgd", [{"params": list(m.parameters())}], 0.1, 0.0, {}) for m in (model, reference)
    ]
    guard = NonFiniteGuard()
    _step(model, optimizers[0], guard, 1.0, 0)
    optimizers[1].zero_grad()
    reference(torch.ones(2, 4)).pow(2).mean().backward()
    optimizers[1].step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    guard.raise_if_tripped(0)
