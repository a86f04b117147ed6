import math

import pytest
import torch
import torch.nn.functional as F

from solo_ext.losses.tcr import _logdet_identity_plus, tcr_loss


def _naive(z, mu, centering):
    """-logdet(I_d + mu/d · ZᵀJZ) with an explicit centering matrix and torch.logdet, in float64."""
    b, d = z.shape
    z = F.normalize(z.double(), dim=1)
    j = torch.eye(b, dtype=torch.float64)
    if centering:
        j = j - torch.full((b, b), 1 / b, dtype=torch.float64)
    return -torch.logdet(torch.eye(d, dtype=torch.float64) + mu / d * z.T @ j @ z)


@pytest.mark.parametrize("b, d", [(6, 10), (10, 6), (8, 8)])
@pytest.mark.parametrize("centering", [False, True])
@pytest.mark.parametrize("mu", [1.0, 3.0])
def test_matches_naive_logdet(b, d, centering, mu):
    torch.manual_seed(b * d)
    z = torch.randn(b, d, dtype=torch.float64)
    torch.testing.assert_close(tcr_loss(z, mu, centering), _naive(z, mu, centering), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("b, d", [(5, 12), (12, 5)])
def test_batch_side_equals_feature_side(b, d):
    # Sylvester: logdet(I_d + c ZᵀZ) = logdet(I_b + c ZZᵀ), whichever side is smaller
    torch.manual_seed(0)
    z = F.normalize(torch.randn(b, d, dtype=torch.float64), dim=1)
    c = 2.0 / d
    torch.testing.assert_close(
        _logdet_identity_plus(z.T @ z, c), _logdet_identity_plus(z @ z.T, c), rtol=1e-12, atol=0
    )


def test_gradcheck_both_sides_and_centering():
    torch.manual_seed(0)
    for shape in [(4, 6), (6, 4)]:
        for centering in (False, True):
            z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
            assert torch.autograd.gradcheck(lambda t, c=centering: tcr_loss(t, 2.0, c), (z,))


@pytest.mark.parametrize("b, d", [(16, 8), (8, 16)])
def test_collapsed_features_give_finite_values_and_gradients(b, d):
    # all rows identical: ẐᵀẐ has the single eigenvalue b, the centred covariance is zero
    mu = 1.0
    z = torch.randn(1, d).repeat(b, 1).requires_grad_()
    loss = tcr_loss(z, mu)
    loss.backward()
    assert math.isclose(loss.item(), -math.log1p(mu * b / d), rel_tol=1e-5)
    assert torch.isfinite(z.grad).all()

    z.grad = None
    centred = tcr_loss(z, mu, centering=True)
    centred.backward()
    assert abs(centred.item()) < 1e-6
    assert torch.isfinite(z.grad).all()


def test_extreme_mu_falls_back_to_a_jitter():
    # near-collapsed float32 features: the float32 Gram matrix has eigenvalues around -1e-6, and
    # with mu = 1e8 that makes I + (mu/d)·G numerically indefinite; the retry must stay finite
    torch.manual_seed(0)
    b, d, mu = 64, 192, 1e8
    z = torch.randn(1, d).repeat(b, 1) + 1e-3 * torch.randn(b, d)
    normalised = F.normalize(z, dim=1)
    gram = normalised @ normalised.T
    first_try = torch.linalg.cholesky_ex(torch.eye(b) + mu / d * (gram + gram.T) / 2)
    assert first_try.info.item() != 0, "premise: the first Cholesky attempt fails"

    z.requires_grad_()
    loss = tcr_loss(z, mu)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert loss.item() < 0


def test_non_finite_features_give_nan_without_a_host_read(monkeypatch):
    # the training step's non-finite guard names the component; the loss itself never reads
    # a value on the host (which would stall a GPU every step)
    z = torch.randn(4, 8)
    z[1, 2] = float("nan")

    def refuse(*args, **kwargs):
        raise AssertionError("host read in tcr_loss")

    monkeypatch.setattr(torch.Tensor, "item", refuse)
    monkeypatch.setattr(torch.Tensor, "__bool__", refuse)
    assert torch.isnan(tcr_loss(z)).tolist()


@pytest.mark.parametrize("centering", [False, True])
def test_bf16_autocast_computes_in_float32(centering):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(torch.randn(32, 16))
        loss = tcr_loss(z, 1.0, centering)
    assert z.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), tcr_loss(z.double(), 1.0, centering), rtol=1e-5, atol=0)


def test_the_fallback_jitter_is_of_rounding_size():
    # Hadamard's inequality, logdet(A) <= sum(log A_ii), bounds -loss of the jittered matrix
    # A = I + (mu/d)·G + j·I by b·log(1 + mu/d + j) (unit rows: G_ii = 1) when j is of the size of
    # float32 rounding (n·eps·max A_ii); a jitter far larger would break the bound
    torch.manual_seed(0)
    b, d, mu = 64, 192, 1e8
    z = torch.randn(1, d).repeat(b, 1) + 1e-3 * torch.randn(b, d)
    diagonal = 1 + mu / d
    jitter = b * torch.finfo(torch.float32).eps * diagonal
    loss = tcr_loss(z, mu)
    assert torch.isfinite(loss)
    assert -loss.item() <= b * math.log(diagonal + jitter) * (1 + 1e-6)
