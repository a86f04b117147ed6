"""scikit-learn's handwritten digits as a small, real, offline image dataset (the demo's data).

``sklearn.datasets.load_digits()`` ships 1,797 labelled 8x8 grey images (values 0..16, classes
0..9) inside scikit-learn, so it needs no download. They are scaled to uint8, upscaled to 32x32
and held in memory as RGB PIL images; a stratified split (test_size 0.2, random_state 0) gives
1,437 train and 360 val images.

The upscale is bicubic, not nearest: nearest turns every source pixel into a flat 4x4 block,
which is exactly one patch of a ViT with patch size 4. With ``norm_pix_loss`` such a patch's
normalised target is all zeros, and even without it a masked patch would be a single grey value;
bicubic gives every patch a smooth gradient that depends on its neighbours, which is what the
MAE has to learn to predict.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import validate_call
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from solo_ext.data.folders import ImageSamples

DIGITS_IMAGE_SIZE = 32
DIGITS_TEST_SIZE = 0.2
DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_split() -> dict[str, tuple[tuple[Image.Image, ...], tuple[int, ...]]]:
    """Decoded, upscaled images and labels of both splits, built once per process (~0.1 s)."""
    bunch = load_digits()
    # Source values are integers 0..16; 16 maps to 255.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = [
        # A 2-D uint8 array becomes a grey ("L") image.
        Image.fromarray(p)
        .resize((DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE), Image.Resampling.BICUBIC)
        .convert("RGB")
        for p in pixels
    ]
    labels = [int(t) for t in bunch.target]
    train_idx, val_idx = train_test_split(
        np.arange(len(images)),
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return {
        split: (tuple(images[i] for i in idx), tuple(labels[i] for i in idx))
        for split, idx in (("train", train_idx), ("val", val_idx))
    }


@validate_call
def digits_dataset(split: Literal["train", "val"], transform: Callable | None = None) -> ImageSamples:
    """The ``train`` (1,437 images) or ``val`` (360 images) split of the digits.

    Returns:
        ImageSamples with items ``(transform(PIL RGB 32x32 image), label in 0..9)``.

    Raises:
        ValueError: (pydantic's ValidationError) another split; the message names it and the two.
    """
    images, labels = _digits_split()[split]
    return ImageSamples(images, labels, [str(d) for d in range(10)], transform)
