"""Tiny images written with PIL for the data tests (imported by conftest.py and the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ant", "bee", "cat")
IMAGES_PER_CLASS = 4


def write_image(
    path: Path, value: int | None = None, size: tuple[int, int] = (40, 40), seed: int = 0
) -> Path:
    """A solid grey image of ``value`` (so labels can be read back from pixels), or random noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def class_value(class_index: int) -> int:
    """Grey level that encodes a class in the solid test images."""
    return 40 + 80 * class_index
