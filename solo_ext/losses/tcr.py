"""M-MAE total coding rate (TCR) loss (Tan et al., "Information Flow in Self-Supervised Learning",
ICML 2024; the paper's matrix-information regularizer, code ``uniformity_loss_TCR``).

    loss = -logdet(I_d + (mu / d) · ẐᵀẐ)        (or ẐᵀJẐ with J = I_b - 11ᵀ/b when centering)

with Ẑ the (b, d) L2-normalised features. Maximising the coding rate spreads the features over
all d directions, countering dimensional collapse. Note the scale mu/d uses the feature dimension
d (as the M-MAE code does, although its comment says batch size), so for a fixed mu the loss
grows with the batch size b: gathering across processes changes the loss, by design of the paper.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_ext.losses import full_precision


def _logdet_identity_plus(gram: Tensor, scale: float) -> Tensor:
    """logdet(I + scale·gram) for a PSD (n, n) gram and scale > 0, through a Cholesky factor.

    Decided on the device, without reading anything on the host: I + scale·G is positive definite
    in exact arithmetic, but rounding in the Gram matmul leaves G with eigenvalues down to about
    -n·eps·max(diag G). With an extreme scale (float32, near-collapsed features, mu of order 1e8)
    that outweighs the identity; a jitter of the size of that rounding restores positive
    definiteness, and is added only when a first, gradient-free factorisation fails. The loss is
    then only as accurate as float32 allows (pass float64 features for exact values). If even the
    jittered matrix fails (inf or NaN features), the result is NaN, which the training step's
    non-finite guard reports by name.
    """
    n = gram.shape[0]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    # The matmul is symmetric only up to rounding; Cholesky reads one triangle, so make both agree.
    matrix = eye + scale * (gram + gram.T) / 2
    with torch.no_grad():
        _, info = torch.linalg.cholesky_ex(matrix)
        jitter = n * torch.finfo(gram.dtype).eps * matrix.diagonal().max()
        jitter = torch.where(info == 0, torch.zeros_like(jitter), jitter)
    factor, info = torch.linalg.cholesky_ex(matrix + jitter * eye)
    logdet = 2 * factor.diagonal().log().sum()
    return torch.where(info == 0, logdet, torch.full_like(logdet, float("nan")))


@full_precision
def tcr_loss(z: Tensor, mu: float = 1.0, centering: bool = False) -> Tensor:
    """Negative total coding rate of a batch.

    Computed on the smaller side: by Sylvester's identity logdet(I_d + c·ẐᵀẐ) = logdet(I_b + c·ẐẐᵀ),
    so the matrix factorised is min(b, d) square. With centering, ẐᵀJẐ = (JẐ)ᵀ(JẐ) because J is
    symmetric and idempotent, so the same identity applies to the column-centred features JẐ.
    Collapsed features (all rows equal) give a rank-one or zero Gram matrix and a finite loss.

    Args:
        z: (b, d) features.
        mu: coding-rate scale (> 0); the matrix is I + (mu/d)·C.
        centering: use the batch-centred covariance ẐᵀJẐ instead of ẐᵀẐ.

    Returns:
        0-dim tensor -logdet(I_d + (mu/d)·C), at most 0 (reached when C = 0).
    """
    b, d = z.shape
    z = F.normalize(z, dim=1)
    if centering:
        z = z - z.mean(dim=0, keepdim=True)
    gram = z.T @ z if d <= b else z @ z.T
    return -_logdet_identity_plus(gram, mu / d)
