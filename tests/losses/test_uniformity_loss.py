import math

import pytest
import torch

from solo_ext.losses.uniformity import uniformity_loss


def _double_loop(z):
    b = z.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            cos = torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm())
            total += cos**2
    return total / b**2


def test_matches_double_loop():
    torch.manual_seed(0)
    z = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(uniformity_loss(z), _double_loop(z), rtol=1e-12, atol=0)


def test_bounds_orthogonal_and_collapsed():
    orthogonal = torch.eye(4, dtype=torch.float64) * 3
    assert math.isclose(uniformity_loss(orthogonal).item(), 1 / 4, rel_tol=1e-12)
    collapsed = torch.randn(1, 6).repeat(5, 1) * torch.tensor([[1.0], [2.0], [-1.0], [0.5], [3.0]])
    assert math.isclose(uniformity_loss(collapsed).item(), 1.0, rel_tol=1e-6)


def test_invariant_to_row_scaling():
    torch.manual_seed(0)
    z = torch.randn(6, 4, dtype=torch.float64)
    scaled = z * torch.rand(6, 1, dtype=torch.float64).add(0.1)
    torch.testing.assert_close(uniformity_loss(z), uniformity_loss(scaled), rtol=1e-12, atol=0)


def test_gradcheck():
    torch.manual_seed(0)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(uniformity_loss, (z,))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_autocast_computes_in_float32(half):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 32)
    with torch.autocast("cpu", dtype=half):
        z = layer(torch.randn(64, 16))
        loss = uniformity_loss(z)
    assert z.dtype == half
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), uniformity_loss(z.double()), rtol=1e-5, atol=0)
