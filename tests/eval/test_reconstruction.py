import os

import numpy as np
import pytest
import torch
from PIL import Image

from solo_ext.eval.reconstruction import MASKED_GREY, reconstruction_grid, save_grid_png
from solo_ext.losses.mae import patchify

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PATCH, SIDE, PAD = 8, 32, 2


def normalised_images(n: int = 3) -> torch.Tensor:
    """Images whose pixels lie in (0, 1) before normalisation, so clipping never hides an error."""
    pixels = torch.rand(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def random_mask(n: int, num_patches: int = (SIDE // PATCH) ** 2) -> torch.Tensor:
    """(n, L) with 1 = removed, 75% removed, as MAE's random masking."""
    noise = torch.rand(n, num_patches, generator=torch.Generator().manual_seed(1))
    removed = noise.argsort(dim=1)[:, : num_patches * 3 // 4]
    return torch.zeros(n, num_patches).scatter_(1, removed, 1.0)


def cell(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    top, left = row * (SIDE + PAD), col * (SIDE + PAD)
    return grid[top : top + SIDE, left : left + SIDE]


def patch_pixels(image: np.ndarray, index: int) -> np.ndarray:
    r, c = divmod(index, SIDE // PATCH)
    return image[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH]


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_true_patches_reconstruct_the_original(norm_pix_loss):
    imgs = normalised_images()
    mask = random_mask(3)
    target = patchify(imgs, PATCH)
    if norm_pix_loss:
        # what the decoder is trained to predict with norm_pix_loss
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = (target - mean) / (var + 1e-6).sqrt()
    else:
        pred = target.clone()

    grid = reconstruction_grid(imgs, pred, mask, PATCH, MEAN, STD, norm_pix_loss=norm_pix_loss, padding=PAD)

    assert grid.dtype == np.uint8 and grid.shape == (3 * SIDE + 2 * PAD, 3 * SIDE + 2 * PAD, 3)
    for row in range(3):
        assert np.abs(cell(grid, row, 2).astype(int) - cell(grid, row, 0).astype(int)).max() <= 1


def test_wrong_prediction_shows_only_in_removed_patches():
    imgs = normalised_images(2)
    mask = random_mask(2)
    # predicting the channel means (0 in normalised space) everywhere
    grid = reconstruction_grid(
        imgs, torch.zeros(2, 16, PATCH * PATCH * 3), mask, PATCH, MEAN, STD, False, PAD
    )
    mean_colour = np.round(np.array(MEAN) * 255)
    for row in range(2):
        original, reconstruction = cell(grid, row, 0), cell(grid, row, 2)
        for index in range(16):
            if mask[row, index]:
                assert np.abs(patch_pixels(reconstruction, index) - mean_colour).max() <= 1
            else:
                assert np.array_equal(patch_pixels(reconstruction, index), patch_pixels(original, index))


def test_removed_patches_are_grey_in_the_masked_input():
    imgs = normalised_images(2)
    mask = random_mask(2)
    grid = reconstruction_grid(imgs, patchify(imgs, PATCH), mask, PATCH, MEAN, STD, False, PAD)
    for row in range(2):
        original, masked_input = cell(grid, row, 0), cell(grid, row, 1)
        for index in range(16):
            if mask[row, index]:
                assert (patch_pixels(masked_input, index) == MASKED_GREY).all()
            else:
                assert np.array_equal(patch_pixels(masked_input, index), patch_pixels(original, index))
    assert (grid[SIDE : SIDE + PAD] == 255).all()  # white gap between rows


def test_shape_errors_are_reported():
    imgs = normalised_images(2)
    with pytest.raises(ValueError, match=r"mask \(2, 15\) must be .* \(N, L\)"):
        reconstruction_grid(imgs, patchify(imgs, PATCH), torch.zeros(2, 15), PATCH, MEAN, STD, False)


def test_save_grid_png_round_trips_pixels(tmp_path):
    imgs = normalised_images(2)
    grid = reconstruction_grid(imgs, patchify(imgs, PATCH), random_mask(2), PATCH, MEAN, STD, False)
    path = save_grid_png(grid, tmp_path / "recon" / "epoch_0.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), grid)
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_0.png"]


def test_save_grid_png_with_caption_keeps_grid_below(tmp_path):
    imgs = normalised_images(2)
    grid = reconstruction_grid(imgs, patchify(imgs, PATCH), random_mask(2), PATCH, MEAN, STD, True)
    caption = "epoch 3, norm_pix_loss: de-normalised with each original patch's mean/var"
    image = np.asarray(Image.open(save_grid_png(grid, tmp_path / "c.png", caption)).convert("RGB"))
    strip = image.shape[0] - grid.shape[0]
    assert strip > 10 and image.shape[1] >= grid.shape[1]
    assert np.array_equal(image[strip:, : grid.shape[1]], grid)
    assert (image[:strip] < 128).any()  # the caption's text was drawn


def test_save_grid_png_rejects_non_uint8(tmp_path):
    with pytest.raises(TypeError, match="Cannot handle this data type"):  # PIL refuses
        save_grid_png(np.zeros((4, 4, 3), dtype=np.float32), tmp_path / "x.png")


def test_long_caption_on_narrow_grid_is_not_cut_into_fragments(tmp_path):
    grid = np.zeros((40, 100, 3), dtype=np.uint8)
    caption = (
        "epoch 0: original | masked | reconstruction "
        "(norm_pix: de-normalised with each target patch's mean/std)"
    )
    image = np.asarray(Image.open(save_grid_png(grid, tmp_path / "c.png", caption)).convert("RGB"))
    strip = image.shape[0] - grid.shape[0]
    # wrapped at >= 40 characters: three lines at most, on a canvas wider than the grid
    assert image.shape[1] > grid.shape[1] and strip < 60
    assert np.array_equal(image[strip:, : grid.shape[1]], grid)


def test_small_images_are_upscaled_nearest_with_labelled_columns(tmp_path):
    from solo_ext.eval.reconstruction import upscale_nearest

    imgs = normalised_images(2)  # 32-pixel images: x4 to reach 128
    grid = reconstruction_grid(imgs, patchify(imgs, PATCH), random_mask(2), PATCH, MEAN, STD, False, PAD)
    big = upscale_nearest(grid, 128, imgs.shape[-1])
    assert big.shape[0] == grid.shape[0] * 4 and np.array_equal(big[::4, ::4], grid)
    labels = ("original", "masked", "reconstruction")
    image = np.asarray(
        Image.open(save_grid_png(big, tmp_path / "l.png", column_labels=labels)).convert("RGB")
    )
    strip = image.shape[0] - big.shape[0]
    assert 8 < strip < 30 and np.array_equal(image[strip:], big)
    thirds = np.array_split(image[:strip], 3, axis=1)
    assert all((third < 128).any() for third in thirds)  # a label over every column


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_reconstructions_get_the_usual_permissions(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = save_grid_png(np.zeros((8, 8, 3), dtype=np.uint8), tmp_path / "ep=0.png", caption="c")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
