"""MAE reconstruction loss (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

Images are cut into non-overlapping p×p patches; each patch is flattened in (row, col, channel)
order, the layout of the decoder's prediction head. The loss is the per-patch mean squared error,
averaged over the masked (removed) patches only.
"""

import math

import torch
from torch import Tensor

from solo_ext.losses import full_precision


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """Cut images into flattened patches.

    Args:
        imgs: (N, C, H, W) with H == W and H divisible by ``patch_size``.
        patch_size: side p of a square patch.

    Returns:
        (N, L, p*p*C) with L = (H/p)², patches in row-major order, each flattened as (row, col, channel).
    """
    # the config declares that patch_size divides the (square) crop; torch's reshape refuses the rest
    n, c, h, _ = imgs.shape
    g = h // patch_size
    x = imgs.reshape(n, c, g, patch_size, g, patch_size)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, g * g, patch_size * patch_size * c)


def unpatchify(x: Tensor, patch_size: int, channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify`.

    Args:
        x: (N, L, p*p*C) with L a perfect square.
        patch_size: side p of a square patch.
        channels: C.

    Returns:
        (N, C, H, W) with H = W = p·sqrt(L).
    """
    n, num_patches, _ = x.shape
    g = math.isqrt(num_patches)
    x = x.reshape(n, g, g, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, g * patch_size, g * patch_size)


def patch_targets(imgs: Tensor, pred: Tensor, mask: Tensor, patch_size: int) -> Tensor:
    """The patchified images, (N, L, p*p*C), after checking that ``pred`` has their shape and
    ``mask`` is (N, L): broadcasting would hide a wrong shape, so they are compared, not left to torch."""
    target = patchify(imgs, patch_size)
    if pred.shape != target.shape or mask.shape != target.shape[:2]:
        raise ValueError(
            f"pred {tuple(pred.shape)} and mask {tuple(mask.shape)} must be {tuple(target.shape)} and "
            f"{tuple(target.shape[:2])}, the patchified images' (N, L, p*p*C) and (N, L)"
        )
    return target


@full_precision
def mae_loss_func(
    imgs: Tensor, pred: Tensor, mask: Tensor, patch_size: int, norm_pix_loss: bool = False
) -> Tensor:
    """MAE loss: mean squared error on the masked patches.

    With ``norm_pix_loss`` the target of each patch is normalised by its own statistics,
    (x - mean) / sqrt(var + 1e-6) with the unbiased variance, as in the MAE paper's best setting.

    Args:
        imgs: (N, C, H, W) original images.
        pred: (N, L, p*p*C) decoder predictions in :func:`patchify` layout.
        mask: (N, L), 1 = removed (the patches the loss is computed on), 0 = visible.
        patch_size: p.
        norm_pix_loss: normalise each target patch.

    Returns:
        0-dim tensor: sum over masked patches of the per-patch MSE divided by the number of masked
        patches (0 when no patch is masked, rather than 0/0).
    """
    target = patch_targets(imgs, pred, mask, patch_size)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)
