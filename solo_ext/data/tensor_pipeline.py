"""The default back-end for image folders: decode to uint8 tensors, augment with ``transforms.v2``,
batch as uint8, normalise on the device.

The same filled ``augmentations`` entry (:func:`~solo_ext.data.augmentations.fill_augmentation_defaults`)
that drives the PIL pipeline (:func:`~solo_ext.data.augmentations.build_transform_pipeline`, the
reference) drives :func:`build_tensor_pipeline`, op for op and in the same order:
RandomResizedCrop (bicubic, antialiased) or a square resize, ColorJitter, Grayscale, GaussianBlur
(sigma 0.1-2), Solarization (threshold 128), Equalization, HorizontalFlip. Its output is a uint8
tensor (3, crop_size, crop_size); the float conversion and ``(x / 255 - mean) / std`` happen once per
batch on the device (:func:`normalize_images`, called by the LightningModules'
``on_after_batch_transfer``), where they cost nothing next to the model, instead of per image on
the loader's CPU cores. A uint8 batch is also a quarter of a float one to collate and copy.

Decoding: JPEG files with ``torchvision.io.decode_jpeg`` (libjpeg-turbo straight into a tensor),
anything else through PIL (:func:`~solo_ext.data.decode.decode_rgb_tensor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from solo_ext.data.augmentations import crop_and_colour_ops, crop_size_of
from solo_ext.data.info import DATASETS, dataset_mean_std

# The sigma range of the PIL GaussianBlur (SimCLR/BYOL); the kernel covers +-3 sigma of the largest.
BLUR_SIGMA = (0.1, 2.0)
BLUR_KERNEL = 2 * math.ceil(3 * BLUR_SIGMA[1]) + 1
SOLARIZE_THRESHOLD = 128


def build_tensor_pipeline(aug: Mapping) -> Callable:
    """One pretraining pipeline: uint8 tensor (3, H, W) (or a PIL image) -> uint8 (3, s, s).

    Args:
        aug: an entry filled by :func:`~solo_ext.data.augmentations.fill_augmentation_defaults`
            with ``crop_size`` set (``s``), as the config layer fills every entry of a run.
    """
    # PIL images become uint8 tensors (tensors pass through), then the ops the PIL pipeline has
    ops: list = [v2.PILToTensor(), *crop_and_colour_ops(aug, v2)]
    if aug["gaussian_blur"]["prob"] > 0:
        blur = v2.GaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)
        ops.append(v2.RandomApply([blur], p=aug["gaussian_blur"]["prob"]))
    if aug["solarization"]["prob"] > 0:
        ops.append(v2.RandomSolarize(SOLARIZE_THRESHOLD, p=aug["solarization"]["prob"]))
    if aug["equalization"]["prob"] > 0:
        ops.append(v2.RandomEqualize(p=aug["equalization"]["prob"]))
    if aug["horizontal_flip"]["prob"] > 0:
        ops.append(v2.RandomHorizontalFlip(p=aug["horizontal_flip"]["prob"]))
    return v2.Compose(ops)


def tensor_classification_transforms(dataset: str, crop_size: int | None = None) -> tuple[Callable, Callable]:
    """``(T_train, T_val)`` of :func:`~solo_ext.data.augmentations.prepare_transforms` for image
    folders, on uint8 tensors and without the normalisation (done on the device): train
    RandomResizedCrop(s, scale 0.08-1) + flip; val the short side resized to ``s * 256/224`` and a
    center crop ``s`` (``image_size`` None: imagenet, imagenet100, custom), else a resize to
    ``s x s`` when ``s`` differs from the stored size (tiny-imagenet), else the image as stored.
    """
    info = DATASETS[dataset]
    size = crop_size_of(crop_size, dataset)
    bicubic = InterpolationMode.BICUBIC
    to_tensor = v2.PILToTensor()
    train = [
        to_tensor,
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=bicubic, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if info.image_size is None:
        short_side = round(size * 256 / 224)
        val = [v2.Resize(short_side, interpolation=bicubic, antialias=True), v2.CenterCrop(size)]
    elif size != info.image_size:
        val = [v2.Resize((size, size), interpolation=bicubic, antialias=True)]
    else:
        val = []
    return v2.Compose(train), v2.Compose([to_tensor, *val])


def crop_stats(dataset: str, augmentations: Sequence[Mapping]) -> list[tuple[tuple, tuple]]:
    """``(mean, std)`` of every crop of a pretraining batch, in batch order (``num_crops`` per
    pipeline, pipelines in list order), as the PIL pipelines would normalise them."""
    return [dataset_mean_std(dataset, aug) for aug in augmentations for _ in range(aug["num_crops"])]


def normalize_images(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as float32 for a uint8 batch (N, 3, H, W); any other dtype is
    returned unchanged (loaders that normalise on the CPU, e.g. torchvision's CIFAR through PIL).

    ``mean`` and ``std`` are (3,) tensors on ``x``'s device.
    """
    if x.dtype != torch.uint8:
        return x
    scale = 1.0 / (255.0 * std)
    return x.float().mul_(scale.view(1, 3, 1, 1)).sub_((mean / std).view(1, 3, 1, 1))
