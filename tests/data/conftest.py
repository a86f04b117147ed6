"""Tiny image folders in tmp_path: a few 40x40 images per class."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_images import CLASSES, IMAGES_PER_CLASS, class_value, write_image


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """``<root>/<class>/<i>.png`` for 3 classes x 4 images; class ``k`` is solid grey ``class_value(k)``."""
    root = tmp_path / "train"
    for k, name in enumerate(CLASSES):
        for i in range(IMAGES_PER_CLASS):
            write_image(root / name / f"{i}.png", class_value(k))
    return root


@pytest.fixture
def noise_folder(tmp_path) -> Path:
    """``<root>/<class>/<i>.png`` with random-noise images (distinct per file), 3 classes x 4."""
    root = tmp_path / "noise"
    for k, name in enumerate(CLASSES):
        for i in range(IMAGES_PER_CLASS):
            write_image(root / name / f"{i}.png", seed=10 * k + i)
    return root
