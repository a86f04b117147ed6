"""Fixed 2-D sine-cosine positional embeddings for ViTs, and their resizing.

The recipe is the one of MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022): half of the channels encode the column of a patch and the other half its row, each
half as ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_i = 1 / 10000^(i / (D/4))``,
``i = 0 .. D/4 - 1``. Patches are numbered row-major, as ``PatchEmbed`` flattens them.
"""

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor


def _sincos_1d(embed_dim: int, positions: Tensor) -> Tensor:
    """(P,) float64 positions -> (P, embed_dim) as [sin(pos * omega) | cos(pos * omega)]."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2)
    omega = 1.0 / 10000**omega
    angles = positions[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int, cls_token: bool = False) -> Tensor:
    """2-D sine-cosine positional embedding of a square ``grid_size x grid_size`` patch grid.

    Args:
        embed_dim: D, the embedding width, divisible by 4 (two axes, sin and cos each); the
            backbone and decoder configs declare it.
        grid_size: patches per side.
        cls_token: prepend an all-zero row for the class token.

    Returns:
        float32 tensor (grid_size**2, D), or (1 + grid_size**2, D) with ``cls_token``. Row
        ``r * grid_size + c`` is the patch in row r, column c; its first D/2 channels encode c and
        the last D/2 encode r (the channel order of MAE's released checkpoints).
    """
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat(
        [_sincos_1d(embed_dim // 2, cols.reshape(-1)), _sincos_1d(embed_dim // 2, rows.reshape(-1))], dim=1
    )
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def interpolate_pos_embed(pos_embed: Tensor, new_grid: int) -> Tensor:
    """Resize a (cls + square grid) positional embedding to another grid, e.g. to load a
    checkpoint trained at 224 px into a model at 32 px.

    The patch rows are viewed as a (D, g, g) image and resized bicubically (align_corners=False,
    as in MAE's fine-tuning code), by :func:`timm.layers.resample_abs_pos_embed`; the class-token
    row is kept as is.

    Args:
        pos_embed: (1, 1 + g_old**2, D).
        new_grid: g_new, patches per side of the target model.

    Returns:
        (1, 1 + new_grid**2, D), same dtype and device as ``pos_embed``.
    """
    # timm's resampling without antialiasing is exactly MAE's (bicubic, align_corners=False, in
    # float32, the class-token row kept); tests/backbones/test_pos_embed.py proves it
    return resample_abs_pos_embed(
        pos_embed, [new_grid, new_grid], num_prefix_tokens=1, interpolation="bicubic", antialias=False
    )
