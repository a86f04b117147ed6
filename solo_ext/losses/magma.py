"""MAGMA graph-Laplacian loss ("MAGMA: Manifold Regularization for MAEs", WACV 2025).

An RBF graph is built on the batch from one layer's features x; the features y of another layer
(the last block in MAGMA) are asked to be smooth on that graph:

    sq_ij  = ‖x_i - x_j‖²                     (/ sqrt(D) with scale_euclidean_distance)
    gamma  = unbiased std of the off-diagonal sq_ij   (or a fixed value)
    W_ij   = exp(-rbf_scale · sq_ij / gamma),  W_ii = 0
    L      = I - D^-1/2 W D^-1/2,               D = diag(rowsum(W) + 1e-4)
    loss   = trace(yᵀ L y) / b²
           = (1 / 2b²) Σ_ij W_ij ‖y_i/√d_i - y_j/√d_j‖²  +  (1e-4 / b²) Σ_i ‖y_i‖²/d_i

Gradients flow into both the graph (through x, including through gamma) and y, as in the paper's
code. With the batch-std gamma, scale_euclidean_distance cancels out exactly (sq and gamma scale
together); it only matters together with fixed_gamma.
"""

import math

import torch
from torch import Tensor

from solo_ext.losses import full_precision

DEGREE_EPS = 1.0e-4
"""Added to every node degree so that isolated nodes (a row of W near 0) do not divide by zero."""


def rbf_affinity(
    x: Tensor,
    rbf_scale: float = 1.0,
    fixed_gamma: float | None = None,
    scale_euclidean_distance: bool = False,
) -> tuple[Tensor, Tensor]:
    """RBF affinity matrix of a batch.

    Squared distances use the Gram form ‖x_i‖² + ‖x_j‖² - 2 x_i·x_j (b×b memory, never b×b×D)
    of the features centred on the batch mean (the same distances), clamped at 0 against
    rounding. Its diagonal can be a tiny nonzero, so gamma is the std of exactly
    the off-diagonal entries. A batch whose off-diagonal distances are all equal (b = 2, or collapsed
    features) has gamma = 0; gamma is floored at the dtype's smallest normal number so W stays finite.

    Args:
        x: (b, D) features, b >= 2.
        rbf_scale: inverse bandwidth multiplier (> 0).
        fixed_gamma: bandwidth (> 0) to use instead of the batch std.
        scale_euclidean_distance: divide the squared distances by sqrt(D).

    The ranges of ``rbf_scale`` and ``fixed_gamma`` are declared once, on ``MagmaSpec``.

    Returns:
        W: (b, b) symmetric, zero diagonal, entries in [0, 1].
        gamma: 0-dim tensor, the bandwidth used (a constant tensor when fixed_gamma is given).
    """
    b, dim = x.shape
    if b < 2:
        raise ValueError(f"the MAGMA graph needs at least 2 samples, got a batch of {b}")
    # Distances do not change under a common shift; centring on the batch mean first keeps the
    # Gram form free of cancellation when the features share a large offset (in float32,
    # ‖x_i‖² + ‖x_j‖² - 2 x_i·x_j loses every digit of a small distance between large vectors).
    x = x - x.mean(dim=0, keepdim=True)
    sq_norms = x.pow(2).sum(dim=1)
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2 * x @ x.T).clamp_min(0)
    if scale_euclidean_distance:
        sq = sq / math.sqrt(dim)
    diagonal = torch.eye(b, dtype=torch.bool, device=x.device)
    if fixed_gamma is None:
        # The unbiased std of the b(b-1) off-diagonal entries from masked sums: no boolean
        # indexing, so no host synchronisation on a GPU.
        count = b * (b - 1)
        mean = sq.masked_fill(diagonal, 0).sum() / count
        var = (sq - mean).pow(2).masked_fill(diagonal, 0).sum() / (count - 1)
        gamma = var.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()
    else:
        gamma = torch.tensor(fixed_gamma, dtype=sq.dtype, device=sq.device)
    w = torch.exp(-rbf_scale * sq / gamma).masked_fill(diagonal, 0)
    return w, gamma


def normalized_laplacian(w: Tensor) -> Tensor:
    """Symmetric normalised graph Laplacian I - D^-1/2 W D^-1/2 with D = diag(rowsum(W) + 1e-4).

    Args:
        w: (b, b) symmetric non-negative affinities.

    Returns:
        (b, b) symmetric positive semi-definite, eigenvalues in [0, 2].
    """
    inv_sqrt_degree = (w.sum(dim=1) + DEGREE_EPS).rsqrt()
    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    return eye - inv_sqrt_degree[:, None] * w * inv_sqrt_degree[None, :]


@full_precision
def magma_loss(
    x: Tensor,
    y: Tensor,
    rbf_scale: float = 1.0,
    fixed_gamma: float | None = None,
    scale_euclidean_distance: bool = False,
) -> Tensor:
    """MAGMA loss trace(yᵀ L y) / b² with L the normalised Laplacian of the RBF graph of x.

    Args:
        x: (b, D_x) features the graph is built from (an intermediate block in MAGMA), b >= 2.
        y: (b, D_y) features that must be smooth on the graph (the last block in MAGMA).
        rbf_scale: inverse bandwidth multiplier (> 0).
        fixed_gamma: bandwidth (> 0) to use instead of the batch std of the squared distances.
        scale_euclidean_distance: divide the squared distances by sqrt(D_x).

    Returns:
        0-dim tensor, >= 0.
    """
    w, _ = rbf_affinity(x, rbf_scale, fixed_gamma, scale_euclidean_distance)
    laplacian = normalized_laplacian(w)
    b = x.shape[0]
    return (y * (laplacian @ y)).sum() / b**2
