import math

import pytest
import torch

from solo_ext.losses.magma import DEGREE_EPS, magma_loss, normalized_laplacian, rbf_affinity


def _pairwise_form(x, y, rbf_scale=1.0, fixed_gamma=None, scale_euclidean_distance=False):
    """The loss written as a sum over pairs, from broadcast distances, in float64.

    trace(yᵀLy) = Σ_i ‖y_i‖² - Σ_ij W_ij y_i·y_j / √(d_i d_j), and since Σ_j W_ij = d_i - eps,
    ½ Σ_ij W_ij ‖y_i/√d_i - y_j/√d_j‖² = Σ_i ‖y_i‖² (d_i - eps)/d_i - Σ_ij W_ij y_i·y_j / √(d_i d_j),
    so trace(yᵀLy) = ½ Σ_ij W_ij ‖y_i/√d_i - y_j/√d_j‖² + eps Σ_i ‖y_i‖²/d_i.
    """
    b, dim = x.shape
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if scale_euclidean_distance:
        sq = sq / math.sqrt(dim)
    off = [sq[i, j] for i in range(b) for j in range(b) if i != j]
    gamma = torch.stack(off).std() if fixed_gamma is None else fixed_gamma
    w = torch.exp(-rbf_scale * sq / gamma) * (1 - torch.eye(b, dtype=x.dtype))
    degree = w.sum(1) + DEGREE_EPS
    total = 0.0
    for i in range(b):
        for j in range(b):
            diff = y[i] / degree[i].sqrt() - y[j] / degree[j].sqrt()
            total = total + 0.5 * w[i, j] * (diff**2).sum()
        total = total + DEGREE_EPS * (y[i] ** 2).sum() / degree[i]
    return total / b**2


VARIANTS = [
    {},
    {"rbf_scale": 2.0},
    {"scale_euclidean_distance": True},
    {"fixed_gamma": 3.0, "scale_euclidean_distance": True},
]


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_matches_pairwise_sum_form(kwargs):
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64)
    y = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(magma_loss(x, y, **kwargs), _pairwise_form(x, y, **kwargs), rtol=1e-12, atol=0)


def test_isolated_node_keeps_the_degree_eps_term():
    # a far-away sample has W ≈ 0 to all others, so the eps term ‖y_i‖²·eps/d_i ≈ ‖y_i‖² dominates
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [100.0, 100.0]], dtype=torch.float64)
    y = torch.zeros(4, 2, dtype=torch.float64)
    y[3] = torch.tensor([3.0, 4.0])
    loss = magma_loss(x, y, fixed_gamma=1.0)
    assert math.isclose(loss.item(), 25 / 16, rel_tol=1e-9)
    torch.testing.assert_close(loss, _pairwise_form(x, y, fixed_gamma=1.0), rtol=1e-12, atol=0)


def test_gram_distances_and_off_diagonal_gamma():
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64) + 3
    w, gamma = rbf_affinity(x)
    sq = torch.cdist(x, x) ** 2
    off_diagonal = sq[~torch.eye(6, dtype=torch.bool)]
    torch.testing.assert_close(gamma, off_diagonal.std(), rtol=1e-12, atol=0)
    expected = torch.exp(-sq / off_diagonal.std()).fill_diagonal_(0)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-15)


def test_scaling_cancels_with_batch_gamma_but_not_with_fixed_gamma():
    torch.manual_seed(0)
    x, y = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(magma_loss(x, y), magma_loss(x, y, scale_euclidean_distance=True))
    fixed = magma_loss(x, y, fixed_gamma=4.0)
    assert not torch.isclose(fixed, magma_loss(x, y, fixed_gamma=4.0, scale_euclidean_distance=True))


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_laplacian_is_symmetric_psd_with_spectrum_in_0_2(kwargs):
    torch.manual_seed(1)
    w, _ = rbf_affinity(torch.randn(10, 6, dtype=torch.float64), **kwargs)
    laplacian = normalized_laplacian(w)
    torch.testing.assert_close(laplacian, laplacian.T, rtol=0, atol=1e-15)
    eigenvalues = torch.linalg.eigvalsh(laplacian)
    assert eigenvalues.min() >= -1e-12
    assert eigenvalues.max() <= 2 + 1e-12


def test_gradcheck_through_x_gamma_and_y():
    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(magma_loss, (x, y))
    assert torch.autograd.gradcheck(lambda a, b: magma_loss(a, b, rbf_scale=2.0, fixed_gamma=3.0), (x, y))


def test_gradient_flows_through_gamma():
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 3, dtype=torch.float64)
    magma_loss(x, y).backward()
    with_gamma = x.grad.clone()
    # the same loss with gamma held at its value: only the path through gamma differs
    gamma = rbf_affinity(x)[1].item()
    x.grad = None
    magma_loss(x, y, fixed_gamma=gamma).backward()
    assert not torch.allclose(with_gamma, x.grad)


def test_degenerate_batches_stay_finite():
    y = torch.randn(4, 3)
    collapsed = torch.randn(1, 8).repeat(4, 1).requires_grad_()
    loss = magma_loss(collapsed, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(collapsed.grad).all()
    pair = torch.randn(2, 8, requires_grad=True)
    loss = magma_loss(pair, y[:2])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pair.grad).all()


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="at least 2"):
        magma_loss(torch.randn(1, 4), torch.randn(1, 4))
    # torch's matmul refuses unequal batches; rbf_scale and fixed_gamma are declared on MagmaSpec
    # (tests/methods/test_reliability.py feeds it the bad values)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        magma_loss(torch.randn(4, 4), torch.randn(3, 4))


def test_bf16_autocast_computes_in_float32():
    torch.manual_seed(0)
    first, second = torch.nn.Linear(8, 16), torch.nn.Linear(16, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = first(torch.randn(24, 8))
        y = second(x)
        loss = magma_loss(x, y)
    assert x.dtype == y.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), magma_loss(x.double(), y.double()), rtol=1e-5, atol=0)


def test_float32_distances_survive_a_large_common_offset():
    # Features with a large shared component (e.g. the mean of patch tokens) and a small spread:
    # uncentred float32 Gram distances lose the spread entirely; centred ones match float64.
    torch.manual_seed(0)
    spread_x, spread_y = torch.randn(16, 32, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    offset = 1e3 * torch.randn(1, 32, dtype=torch.float64)
    x64 = spread_x + offset
    reference_w, reference_gamma = rbf_affinity(spread_x)  # distances do not see the offset
    w32, gamma32 = rbf_affinity(x64.float())
    torch.testing.assert_close(gamma32.double(), reference_gamma, rtol=1e-4, atol=0)
    torch.testing.assert_close(w32.double(), reference_w, rtol=0, atol=1e-5)
    loss32 = magma_loss(x64.float(), spread_y.float())
    torch.testing.assert_close(loss32.double(), _pairwise_form(x64, spread_y), rtol=1e-4, atol=0)
