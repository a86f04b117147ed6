"""Data format check, the choice of image back-end, and DataLoader construction."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from solo_ext.data.augmentations import build_transform_pipeline, prepare_transforms
from solo_ext.data.downloads import TORCHVISION_DATASETS
from solo_ext.data.tensor_pipeline import build_tensor_pipeline, tensor_classification_transforms
from solo_ext.utils.errors import DataError

DATA_FORMATS = ("image_folder", "ram_image_folder", "dali")
# read by torchvision (downloaded archives) or held in memory (digits): no image folder to decode
NOT_FOLDERS = (*TORCHVISION_DATASETS, "digits")


def image_backend(dataset: str, data_format: str) -> str:
    """Which pipelines read ``dataset`` in ``data_format``.

    - ``"tensor"``: image folders in ``image_folder``/``ram_image_folder`` (the default):
      torchvision decodes, ``transforms.v2`` augments uint8 tensors, the module normalises on the
      device (:mod:`solo_ext.data.tensor_pipeline`).
    - ``"dali"``: image folders in ``dali`` (:mod:`solo_ext.data.dali`).
    - ``"pil"``: CIFAR, STL-10 (torchvision) and digits: PIL transforms to normalised floats.

    (``dali`` for a dataset that is not an image folder is refused by the config layer.)
    """
    if dataset in NOT_FOLDERS:
        return "pil"
    return "dali" if data_format == "dali" else "tensor"


def pretrain_transform(backend: str, dataset: str, aug: Mapping) -> Callable:
    """One pretraining pipeline of the filled entry ``aug``: PIL -> normalised float (``"pil"``)
    or uint8 tensor -> uint8 (``"tensor"``)."""
    builders = {
        "pil": lambda: build_transform_pipeline(dataset, aug),
        "tensor": lambda: build_tensor_pipeline(aug),
    }
    return builders[backend]()  # DALI has no per-image transform


def classification_transforms(
    backend: str, dataset: str, crop_size: int | None = None, aug_cfg: Mapping | None = None
) -> tuple[Callable, Callable]:
    """``(T_train, T_val)`` of :func:`~solo_ext.data.augmentations.prepare_transforms` for the
    back-end (the tensor ones leave normalisation to the device)."""
    builders = {
        "pil": lambda: prepare_transforms(dataset, crop_size, aug_cfg),
        "tensor": lambda: tensor_classification_transforms(dataset, crop_size),
    }
    return builders[backend]()  # DALI has no per-image transform


def prepare_dataloader(
    ds: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = True,
    drop_last: bool = True,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader over ``ds`` (solo-learn's settings).

    Pretraining batches of :func:`~solo_ext.data.datasets.prepare_pretrain_dataset` items are
    ``[indexes (B,), [crop_0 (B, 3, H, W), ...], targets (B,)]``; classification batches are
    ``[x (B, 3, H, W), y (B,)]``; images are normalised floats (PIL back-end) or uint8 (tensor
    back-end), which the LightningModules normalise on the device. ``pin_memory`` only when CUDA
    is available (it warns and does nothing otherwise); ``persistent_workers`` when
    ``num_workers > 0``, so workers are not re-spawned every epoch. Under DDP Lightning swaps in a
    DistributedSampler; ``batch_size`` is per process. ``generator`` (optional) drives the
    shuffling instead of the global RNG (it is read lazily, when the first batch of an epoch is
    drawn).

    Raises:
        DataError: ``drop_last`` with a dataset smaller than one batch (an epoch would have no step).
    """
    sized = cast(Sized, ds)  # a map-style dataset: every dataset of solo_ext has a length
    if drop_last and len(sized) < batch_size:
        raise DataError(
            f"optimizer.batch_size={batch_size!r}: larger than the dataset ({len(sized)} images), "
            "so no full batch exists; lower it"
        )
    sampler = RandomSampler(sized, generator=generator) if shuffle else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        # the workers' base seed comes from a generator of its own, so creating an iterator
        # never shifts the global RNG that augmentations and masks draw from
        generator=torch.Generator().manual_seed(0) if generator is not None else None,
    )
