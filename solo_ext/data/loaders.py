"""Data format check and DataLoader construction."""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from solo_ext.utils.errors import ConfigError

DATA_FORMATS = ("image_folder", "ram_image_folder", "dali")


def _dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # no "nvidia" parent package / broken namespace
        return False


def check_data_format(data_format: str, key: str = "data.format") -> str:
    """Validate ``data.format`` and return the format the loaders will actually use.

    - ``image_folder``: images decoded from disk on access.
    - ``ram_image_folder``: every image decoded once into memory at construction.
    - ``dali``: accepted for compatibility with solo-learn configs, but solo-ext ships no DALI
      pipeline: where NVIDIA DALI and a CUDA GPU are both present it falls back to
      ``image_folder`` (same folder layout) with a one-line warning; elsewhere it is an error.

    Raises:
        ConfigError: unknown format, or ``dali`` without DALI and a CUDA GPU.
    """
    if data_format not in DATA_FORMATS:
        raise ConfigError(f"{key}={data_format!r}: must be one of {', '.join(DATA_FORMATS)}")
    if data_format != "dali":
        return data_format
    has_dali, has_gpu = _dali_installed(), torch.cuda.is_available()
    if not (has_dali and has_gpu):
        missing = (
            "neither is available here"
            if not (has_dali or has_gpu)
            else ("NVIDIA DALI is not installed here" if has_gpu else "no CUDA GPU is available here")
        )
        raise ConfigError(
            f"{key}='dali': needs NVIDIA DALI and a CUDA GPU, {missing}; "
            "use data.format=image_folder (same folder layout)"
        )
    warnings.warn(
        f"{key}='dali': solo-ext has no DALI pipeline; reading the same folders with image_folder",
        stacklevel=2,
    )
    return "image_folder"


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
        ConfigError: ``batch_size < 1``, ``num_workers < 0``, or ``drop_last`` with a dataset
            smaller than one batch (an epoch would have no step).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"optimizer.batch_size={batch_size!r}: must be an integer >= 1")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"data.num_workers={num_workers!r}: must be an integer >= 0")
    if drop_last and len(ds) < batch_size:
        raise ConfigError(
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
