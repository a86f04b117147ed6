"""What solo-ext knows about each dataset: classes, normalisation statistics, crop size, paths.

The table mirrors solo-learn's per-dataset constants (``cifar10``, ``cifar100``, ``stl10``,
``imagenet``, ``imagenet100``, ``custom``) and adds ``tiny-imagenet`` and ``digits`` (the
offline demo dataset, scikit-learn's 8x8 digits upscaled to 32x32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from solo_ext.data.folders import find_classes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Default location of every dataset, relative to the current directory (solo-learn's yamls use
# "./datasets" for the CIFARs and "./datasets/imagenet-100/{train,val}" for ImageNet-100).
DEFAULT_ROOT = "./datasets"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset.

    Attributes:
        num_classes: number of classes, or None where it depends on the data (``custom``).
        mean, std: per-channel normalisation statistics of images in [0, 1], or None where they
            come from the augmentation config (``custom``).
        crop_size: default side of the square crops fed to the network.
        image_size: side of the stored square images, or None where images vary in size.
        train_path: default train location when ``data.train_path`` is not given.
        val_path: default val location when ``data.val_path`` is not given (None: no default).
    """

    num_classes: int | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    crop_size: int
    image_size: int | None
    train_path: str | None
    val_path: str | None


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32, 32, DEFAULT_ROOT, DEFAULT_ROOT
    ),
    "cifar100": DatasetInfo(
        100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32, 32, DEFAULT_ROOT, DEFAULT_ROOT
    ),
    # solo-learn normalises STL-10 with (rounded) CIFAR-10 statistics; kept so that its checkpoints
    # and ours see identically normalised inputs.
    "stl10": DatasetInfo(
        10, (0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261), 96, 96, DEFAULT_ROOT, DEFAULT_ROOT
    ),
    "imagenet": DatasetInfo(
        1000,
        IMAGENET_MEAN,
        IMAGENET_STD,
        224,
        None,
        f"{DEFAULT_ROOT}/imagenet/train",
        f"{DEFAULT_ROOT}/imagenet/val",
    ),
    "imagenet100": DatasetInfo(
        100,
        IMAGENET_MEAN,
        IMAGENET_STD,
        224,
        None,
        f"{DEFAULT_ROOT}/imagenet-100/train",
        f"{DEFAULT_ROOT}/imagenet-100/val",
    ),
    # Tiny-ImageNet is a 64x64 subset of ImageNet, so ImageNet's statistics apply.
    "tiny-imagenet": DatasetInfo(
        200,
        IMAGENET_MEAN,
        IMAGENET_STD,
        64,
        64,
        f"{DEFAULT_ROOT}/tiny-imagenet-200/train",
        f"{DEFAULT_ROOT}/tiny-imagenet-200/val",
    ),
    "custom": DatasetInfo(None, None, None, 224, None, DEFAULT_ROOT, None),
    # Statistics of the 1,437 training images after the 32x32 bicubic upscale (all three channels
    # equal, the images are grey); tests/data/test_digits.py recomputes them.
    "digits": DatasetInfo(10, (0.30935,) * 3, (0.34883,) * 3, 32, 32, None, None),
}


def dataset_mean_std(
    dataset: str, aug_cfg: Mapping | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics for ``dataset`` (solo-learn's precedence).

    A dataset with known statistics always uses them; otherwise (``custom``) the augmentation
    config's ``mean``/``std`` are used when given, else ImageNet's.

    Returns:
        (mean, std), each a tuple of 3 floats for images in [0, 1].
    """
    info = DATASETS[dataset]
    if info.mean is not None:
        return info.mean, cast(tuple[float, ...], info.std)  # known together with the mean
    aug_cfg = aug_cfg or {}
    mean = aug_cfg.get("mean")
    std = aug_cfg.get("std")
    return (
        tuple(float(m) for m in mean) if mean is not None else IMAGENET_MEAN,
        tuple(float(s) for s in std) if std is not None else IMAGENET_STD,
    )


def num_classes_of(dataset: str, train_path: str | None, no_labels: bool = False) -> int | None:
    """Number of classes of ``dataset``.

    For ``custom`` it is the number of class folders under ``train_path`` (default
    ``./datasets``), or None when ``no_labels`` (a flat folder of unlabelled images).

    Raises:
        DataError: ``custom`` train folder missing or without class folders.
    """
    info = DATASETS[dataset]
    if info.num_classes is not None:
        return info.num_classes
    if no_labels:
        return None
    root = train_path if train_path is not None else info.train_path
    return len(find_classes(root, "data.train_path", dataset))
