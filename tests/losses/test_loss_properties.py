"""Laws of the losses, checked on drawn batches (hypothesis): what each loss is invariant to
follows from its definition.

- uniformity, mean((ẐẐᵀ)²) with Ẑ the L2-normalised rows: any nonzero scale of each row (the sign
  is squared away), a common rotation ZQ (ẐQQᵀẐᵀ = ẐẐᵀ) and an order of the rows leave it; it
  lies in [1/b, 1].
- TCR, -logdet(I + (mu/d)·ẐᵀẐ): a positive scale of each row, a common rotation (ẐᵀẐ → QᵀẐᵀẐQ,
  same eigenvalues; centring commutes with it) and an order of the rows leave it; it is <= 0.
- MAGMA, tr(YᵀLY)/b² with L the normalised Laplacian of the RBF graph of X: the graph sees only
  the pairwise distances of X, divided by their batch std, so a rotation, a shift and a common scale
  of X leave it; a rotation of Y is tr(RᵀYᵀLYR) = tr(YᵀLY); a scale c of Y multiplies it by c²; an
  order of the samples (the same for X and Y) leaves it; 0 <= loss <= 2‖Y‖²/b² (L's spectrum is
  in [0, 2]).
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solo_ext.losses.magma import magma_loss
from solo_ext.losses.tcr import tcr_loss
from solo_ext.losses.uniformity import uniformity_loss

FAST = settings(max_examples=30, deadline=None, database=None)  # nothing written to the repo
seeds = st.integers(0, 2**32 - 1)
batches = st.integers(2, 12)
dims = st.integers(1, 10)
scales = st.floats(1e-2, 1e2)


def gaussian(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rotation(seed: int, d: int) -> torch.Tensor:
    """A random orthogonal d x d matrix (QR of a Gaussian, signs fixed by R's diagonal)."""
    q, r = torch.linalg.qr(gaussian(seed, d, d))
    return q * torch.sign(torch.diagonal(r))


def row_scales(seed: int, b: int, low: float, high: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.empty(b, 1, dtype=torch.float64).uniform_(low, high, generator=generator)


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@FAST
@given(seed=seeds, b=batches, d=dims, negative=st.booleans())
def test_uniformity_ignores_the_scale_of_each_row(seed, b, d, negative):
    z = gaussian(seed, b, d)
    scale = row_scales(seed + 1, b, 1e-2, 1e2) * (-1 if negative else 1)
    close(uniformity_loss(z * scale), uniformity_loss(z))


@FAST
@given(seed=seeds, b=batches, d=dims)
def test_uniformity_ignores_a_common_rotation_and_the_order(seed, b, d):
    z = gaussian(seed, b, d)
    loss = uniformity_loss(z)
    close(uniformity_loss(z @ rotation(seed + 1, d)), loss)
    close(uniformity_loss(z[torch.randperm(b, generator=torch.Generator().manual_seed(seed))]), loss)
    assert 1 / b - 1e-12 <= loss.item() <= 1 + 1e-12


@FAST
@given(seed=seeds, b=batches, d=dims, mu=st.floats(0.1, 10), centering=st.booleans())
def test_tcr_ignores_row_scale_rotation_and_order(seed, b, d, mu, centering):
    z = gaussian(seed, b, d)
    loss = tcr_loss(z, mu=mu, centering=centering)
    close(tcr_loss(z * row_scales(seed + 1, b, 1e-2, 1e2), mu=mu, centering=centering), loss)
    close(tcr_loss(z @ rotation(seed + 2, d), mu=mu, centering=centering), loss)
    order = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    close(tcr_loss(z[order], mu=mu, centering=centering), loss)
    assert loss.item() <= 1e-12


@FAST
@given(seed=seeds, b=batches, dx=dims, dy=dims, scale=scales, shift=st.floats(-1e3, 1e3))
def test_magma_graph_ignores_rotation_shift_and_scale_of_x(seed, b, dx, dy, scale, shift):
    x, y = gaussian(seed, b, dx), gaussian(seed + 1, b, dy)
    loss = magma_loss(x, y)
    moved = scale * (x @ rotation(seed + 2, dx)) + shift * gaussian(seed + 3, 1, dx)
    close(magma_loss(moved, y), loss, rtol=1e-7, atol=1e-12)


@FAST
@given(seed=seeds, b=batches, dx=dims, dy=dims, scale=scales, rbf_scale=st.floats(0.1, 10))
def test_magma_is_quadratic_in_y_and_ignores_its_rotation_and_the_order(seed, b, dx, dy, scale, rbf_scale):
    x, y = gaussian(seed, b, dx), gaussian(seed + 1, b, dy)
    loss = magma_loss(x, y, rbf_scale=rbf_scale)
    close(magma_loss(x, y @ rotation(seed + 2, dy), rbf_scale=rbf_scale), loss)
    close(magma_loss(x, scale * y, rbf_scale=rbf_scale), scale**2 * loss)
    order = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    close(magma_loss(x[order], y[order], rbf_scale=rbf_scale), loss)
    assert -1e-12 <= loss.item() <= 2 * y.pow(2).sum().item() / b**2 + 1e-12
