"""U-MAE uniformity loss (Zhang et al., "How Mask Matters: Towards Theoretical Understandings of
Masked Autoencoders", NeurIPS 2022).

Penalises dimensional collapse by pushing the batch's normalised features apart: the mean of
the squared cosine similarities over all pairs, the diagonal included, without a temperature:
the form of U-MAE's current loss_func.py, of the MAGMA code and of M-MAE's ``--reg square``
(U-MAE's first upload divided the similarities by tau = 0.1 and paired that with lambda 1e-4).
"""

import torch.nn.functional as F
from torch import Tensor

from solo_ext.losses import full_precision


@full_precision
def uniformity_loss(z: Tensor) -> Tensor:
    """Mean squared cosine similarity of a batch.

    Args:
        z: (b, d) features.

    Returns:
        0-dim tensor mean(S²) with S = ẐẐᵀ (b×b, diagonal included) and Ẑ the L2-normalised rows of z;
        it lies in [1/b, 1] for nonzero rows, 1 when all rows are parallel.
    """
    z = F.normalize(z, dim=1)
    return (z @ z.T).pow(2).mean()
