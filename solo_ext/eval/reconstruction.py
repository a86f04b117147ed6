"""MAE reconstruction pictures (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

One row per image: the original, the encoder's input (removed patches grey), and the decoder's
reconstruction with the visible patches pasted back, as in the MAE paper's figures.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

from solo_ext.eval.diagnostics import atomic_output
from solo_ext.losses.mae import patch_targets, unpatchify

# Same epsilon as the norm_pix_loss target, (x - mean) / sqrt(var + eps), so that the inverse
# reproduces the original patch exactly.
NORM_PIX_EPS = 1.0e-6

# The value (on 0..255) that removed patches are painted with in the masked-input column.
MASKED_GREY = 128

# Captions wrap at the grid's width, but never narrower than this many characters.
CAPTION_MIN_CHARS = 40


def _to_uint8(pixels: Tensor) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


@torch.no_grad()
def reconstruction_grid(
    imgs: Tensor,
    pred: Tensor,
    mask: Tensor,
    patch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    norm_pix_loss: bool,
    padding: int = 2,
) -> np.ndarray:
    """Picture of MAE reconstructions: original | masked input | reconstruction, one row per image.

    With ``norm_pix_loss`` the decoder predicts each patch normalised by its own mean and variance,
    so a prediction has no absolute colour. It is de-normalised here with the mean and unbiased
    variance of the ORIGINAL (target) patch, the usual MAE visualisation. That hands the picture
    each masked patch's true mean colour and contrast: it shows structure, not how well those
    statistics were predicted. It is a picture, not a metric.

    Args:
        imgs: (N, 3, H, W) images normalised with ``mean``/``std`` (what the encoder saw).
        pred: (N, L, p*p*3) decoder predictions in ``solo_ext.losses.mae.patchify`` layout, in the
            normalised image space (per-patch normalised with ``norm_pix_loss``).
        mask: (N, L), 1 = removed (predicted), 0 = visible.
        patch_size: p.
        mean: per-channel mean the images were normalised with.
        std: per-channel std the images were normalised with.
        norm_pix_loss: whether ``pred`` is per-patch normalised.
        padding: white pixels between cells.

    Returns:
        uint8 array (N*H + (N-1)*padding, 3*W + 2*padding, 3).
    """
    imgs = imgs.detach().float().cpu()
    pred = pred.detach().float().cpu()
    mask = mask.detach().float().cpu()
    target = patch_targets(imgs, pred, mask, patch_size)
    if norm_pix_loss:
        pred = pred * (target.var(dim=-1, keepdim=True) + NORM_PIX_EPS).sqrt() + target.mean(
            dim=-1, keepdim=True
        )
    patch_mask = mask.unsqueeze(-1).expand_as(target)
    reconstruction = unpatchify(pred * patch_mask + target * (1 - patch_mask), patch_size)
    removed = unpatchify(patch_mask, patch_size) > 0.5

    channel_mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    channel_std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    original = _to_uint8(imgs * channel_std + channel_mean)
    masked_input = original.clone()
    masked_input[removed.permute(0, 2, 3, 1)] = MASKED_GREY
    reconstructed = _to_uint8(reconstruction * channel_std + channel_mean)

    # torchvision lays the cells out row by row with white padding around each; the outer border is cut
    cells = torch.stack([original, masked_input, reconstructed], dim=1).flatten(0, 1).permute(0, 3, 1, 2)
    grid = make_grid(cells, nrow=3, padding=padding, pad_value=255)
    inner = slice(padding, -padding or None)
    return grid[:, inner, inner].permute(1, 2, 0).numpy()


def upscale_nearest(grid: np.ndarray, min_cell: int, cell: int) -> np.ndarray:
    """Repeat every pixel so that a ``cell``-pixel image becomes at least ``min_cell`` pixels
    (an integer factor, nearest neighbour: a 32-pixel image stays sharp and readable)."""
    factor = max(1, -(-min_cell // cell))
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def save_grid_png(
    grid: np.ndarray,
    path: str | Path,
    caption: str | None = None,
    column_labels: Sequence[str] = (),
) -> Path:
    """Write an (H, W, 3) uint8 picture as a PNG, atomically, with an optional caption strip
    above and, with ``column_labels``, one label centred over each equal-width column.

    The grid's pixels are written unchanged (no resampling); the caption is wrapped to its width.

    Returns:
        ``path`` as a Path.
    """
    image = Image.fromarray(grid)
    if column_labels:
        font = ImageFont.load_default()
        height = int(font.getbbox("Mg")[3]) + 6  # an int already (typed float for FreeType fonts)
        labelled = Image.new("RGB", (grid.shape[1], grid.shape[0] + height), "white")
        draw = ImageDraw.Draw(labelled)
        column = grid.shape[1] / len(column_labels)
        for i, label in enumerate(column_labels):
            x = i * column + max((column - draw.textlength(label, font=font)) / 2, 0)
            draw.text((x, 3), label, fill="black", font=font)
        labelled.paste(image, (0, height))
        image = labelled
        grid = np.asarray(image)
    if caption:
        font = ImageFont.load_default()
        measure = ImageDraw.Draw(image)
        char_width = max(measure.textlength(caption, font=font) / len(caption), 1.0)
        # Grids of small images are narrow; rather than wrap a caption into a column of word
        # fragments, let the strip (and the canvas) be wider than the grid.
        columns = max(int(grid.shape[1] / char_width), CAPTION_MIN_CHARS)
        lines = textwrap.wrap(caption, width=columns, break_long_words=False)
        line_height = int(font.getbbox("Mg")[3]) + 2  # an int already (typed float for FreeType fonts)
        width = max(grid.shape[1], *(int(measure.textlength(line, font=font)) + 4 for line in lines))
        canvas = Image.new("RGB", (width, line_height * len(lines) + 4 + grid.shape[0]), "white")
        draw = ImageDraw.Draw(canvas)
        for i, line in enumerate(lines):
            draw.text((2, 2 + i * line_height), line, fill="black", font=font)
        canvas.paste(image, (0, line_height * len(lines) + 4))
        image = canvas
    path = Path(path)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
    return path
