import math

import pytest
import torch

from solo_ext.optim.lars import LARS


def param_with_grad(values, grad) -> torch.nn.Parameter:
    p = torch.nn.Parameter(torch.tensor(values))
    p.grad = torch.tensor(grad)
    return p


def test_one_step_matches_a_hand_computation():
    # ||p|| = 5, ||g|| = 1: local lr = 0.01 * 5 / (1 + 0.1 * 5) = 1/30
    p = param_with_grad([[3.0, 4.0]], [[0.6, 0.8]])
    LARS([p], lr=0.5, weight_decay=0.1, eta=0.01, eps=0.0).step()
    # g' = (g + 0.1 p) / 30 = [0.9, 1.2] / 30 = [0.03, 0.04]; p -= 0.5 g'
    torch.testing.assert_close(p.data, torch.tensor([[2.985, 3.98]]))


def lars_direction(p, g, wd, eta, eps):
    p_norm, g_norm = math.hypot(*p), math.hypot(*g)
    local = eta * p_norm / (g_norm + wd * p_norm + eps)
    return [(gi + wd * pi) * local for pi, gi in zip(p, g)]


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_over_two_steps(nesterov):
    lr, momentum, dampening, wd, eta = 0.3, 0.9, 0.0, 0.05, 0.02
    grads = [[0.5, -1.0, 2.0], [1.5, 0.5, -0.5]]
    p = torch.nn.Parameter(torch.tensor([[1.0, 2.0, -2.0]]))
    optimizer = LARS([p], lr=lr, momentum=momentum, weight_decay=wd, eta=eta, nesterov=nesterov)
    values, buffer = [1.0, 2.0, -2.0], None
    for grad in grads:
        p.grad = torch.tensor([grad])
        optimizer.step()
        d = lars_direction(values, grad, wd, eta, 1e-8)
        buffer = d if buffer is None else [momentum * b + (1 - dampening) * di for b, di in zip(buffer, d)]
        step = [di + momentum * b for di, b in zip(d, buffer)] if nesterov else buffer
        values = [v - lr * s for v, s in zip(values, step)]
    torch.testing.assert_close(p.data, torch.tensor([values]))


def test_clip_lr_caps_the_scaled_rate_at_lr():
    # local lr 1/30 > lr 0.01 -> min(local / lr, 1) = 1: a plain step on g + wd p
    p = param_with_grad([[3.0, 4.0]], [[0.6, 0.8]])
    LARS([p], lr=0.01, weight_decay=0.1, eta=0.01, eps=0.0, clip_lr=True).step()
    torch.testing.assert_close(p.data, torch.tensor([[3.0 - 0.01 * 0.9, 4.0 - 0.01 * 1.2]]))
    # local lr 1/30 < lr 0.5 -> the factor is local / lr and the step is local * (g + wd p)
    q = param_with_grad([[3.0, 4.0]], [[0.6, 0.8]])
    LARS([q], lr=0.5, weight_decay=0.1, eta=0.01, eps=0.0, clip_lr=True).step()
    torch.testing.assert_close(q.data, torch.tensor([[2.97, 3.96]]))


def test_excluded_and_zero_norm_parameters_take_a_plain_sgd_step():
    bias = param_with_grad([1.0, -1.0], [0.5, 0.5])
    weight = param_with_grad([[3.0, 4.0]], [[0.6, 0.8]])
    zero = param_with_grad([[0.0, 0.0]], [[1.0, 2.0]])
    LARS([bias, weight, zero], lr=0.5, weight_decay=0.1, eta=0.01, eps=0.0, exclude_bias_n_norm=True).step()
    torch.testing.assert_close(bias.data, torch.tensor([0.75, -1.25]))  # no scaling, no weight decay
    torch.testing.assert_close(weight.data, torch.tensor([[2.985, 3.98]]))
    torch.testing.assert_close(zero.data, torch.tensor([[-0.5, -1.0]]))
    # without the exclusion a 1-D parameter is scaled like any other
    scaled = param_with_grad([3.0, 4.0], [0.6, 0.8])
    LARS([scaled], lr=0.5, weight_decay=0.1, eta=0.01, eps=0.0).step()
    torch.testing.assert_close(scaled.data, torch.tensor([2.985, 3.98]))


def test_excluded_parameters_follow_torch_sgd_momentum():
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(4))
    reference = torch.nn.Parameter(ours.detach().clone())
    lars = LARS([ours], lr=0.1, momentum=0.9, dampening=0.1, exclude_bias_n_norm=True)
    sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, dampening=0.1)
    for _ in range(4):
        grad = torch.randn(4)
        ours.grad, reference.grad = grad.clone(), grad.clone()
        lars.step()
        sgd.step()
    torch.testing.assert_close(ours.data, reference.data)


def test_reduces_a_quadratic():
    torch.manual_seed(0)
    target = torch.randn(5, 4)
    weight = torch.nn.Parameter(torch.randn(5, 4))
    optimizer = LARS([weight], lr=1.0, momentum=0.9, eta=0.02)

    def closure():
        optimizer.zero_grad()
        loss = (weight - target).pow(2).sum()
        loss.backward()
        return loss

    first = optimizer.step(closure).item()
    for _ in range(200):
        last = optimizer.step(closure).item()
    assert last < 0.01 * first


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        # pydantic's message names the argument on a line of its own, then the value given
        ({"lr": -1.0}, r"\nlr\n.*input_value=-1.0,"),
        ({"momentum": -0.1}, r"\nmomentum\n.*input_value=-0.1,"),
        ({"weight_decay": -1e-4}, r"\nweight_decay\n"),
        ({"eta": 0.0}, r"\neta\n.*input_value=0.0,"),
        ({"nesterov": True}, "nesterov=True: needs momentum > 0"),
    ],
)
def test_invalid_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LARS([torch.nn.Parameter(torch.ones(2, 2))], **{"lr": 0.1, **kwargs})


def test_timm_lars_is_not_a_drop_in():
    # without weight decay timm's Lars takes a plain SGD step (no trust ratio unless always_adapt);
    # solo-learn's LARS, ours, still scales by eta * ||p|| / ||g||
    from timm.optim import Lars

    steps = []
    for make in (lambda ps: LARS(ps, lr=0.1), lambda ps: Lars(ps, lr=0.1)):
        p = torch.nn.Parameter(torch.ones(4))
        opt = make([p])
        p.grad = torch.full((4,), 2.0)
        opt.step()
        steps.append(1.0 - p.detach())
    local_lr = 1e-3 * 2.0 / (4.0 + 1e-8)  # eta * ||p|| / (||g|| + eps), the default eta
    torch.testing.assert_close(steps[0], torch.full((4,), 0.1 * 2.0 * local_lr))
    torch.testing.assert_close(steps[1], torch.full((4,), 0.1 * 2.0))
