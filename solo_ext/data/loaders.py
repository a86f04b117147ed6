"""Data format check and DataLoader construction."""

from __future__ import annotations

import importlib.util

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from solo_ext.utils.errors import DataError

DATA_FORMATS = ("image_folder", "ram_image_folder", "dali")


def dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # no "nvidia" parent package / broken namespace
        return False


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
    ``[x (B, 3, H, W), y (B,)]``. ``pin_memory`` only when CUDA is available (it warns and does
    nothing otherwise); ``persistent_workers`` when ``num_workers > 0``, so workers are not
    re-spawned every epoch. Under DDP Lightning swaps in a DistributedSampler; ``batch_size`` is
    per process. ``generator`` (optional) drives the shuffling instead of the global RNG (it is
    read lazily, when the first batch of an epoch is drawn).

    Raises:
        DataError: ``drop_last`` with a dataset smaller than one batch (an epoch would have no step).
    """
    if drop_last and len(ds) < batch_size:
        raise DataError(
            f"optimizer.batch_size={batch_size!r}: larger than the dataset ({len(ds)} images), "
            "so no full batch exists; lower it"
        )
    sampler = RandomSampler(ds, generator=generator) if shuffle else None
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
