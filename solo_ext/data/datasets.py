"""Pretraining and classification datasets for every name in :data:`~solo_ext.data.info.DATASETS`.

Where the data comes from:

- ``cifar10``, ``cifar100``: torchvision, under ``train_path``/``val_path`` (default
  ``./datasets``), train and test splits; downloaded there when missing and allowed.
- ``stl10``: torchvision; pretraining reads ``train+unlabeled`` (unlabelled targets -1),
  classification ``train``/``test``.
- ``imagenet``, ``imagenet100``: ImageFolder ``<root>/<class>/<image>`` at train_path/val_path.
- ``tiny-imagenet``: its native layout, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG``
  with ``val/val_annotations.txt`` (or a val folder already split per wnid); classes are the
  sorted train wnids.
- ``custom``: ImageFolder, or with ``no_labels`` any folder of images (targets -1).
- ``digits``: scikit-learn's digits in memory (train_path/val_path are ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any, Literal, cast

import numpy as np
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, Subset

from solo_ext.data.digits import digits_dataset
from solo_ext.data.downloads import TORCHVISION_DATASETS, torchvision_dataset
from solo_ext.data.folders import (
    FolderListings,
    ImageSamples,
    class_folder_dataset,
    flat_folder_dataset,
    tiny_imagenet_val_dataset,
)
from solo_ext.data.info import DATASETS
from solo_ext.utils.errors import DataError

FRACTION_SEED = 42


class IndexedDataset(Dataset):
    """Prepends the sample index: item ``i`` of a ``(x, target)`` dataset becomes ``(i, x, target)``.

    Args:
        base: dataset with ``(x, target)`` items; for pretraining ``x`` is the list of crops.
        hide_labels: report every target as -1 (``data.no_labels``), which the online classifier
            ignores.
    """

    def __init__(self, base: Dataset, hide_labels: bool = False) -> None:
        self.base = base
        self.hide_labels = hide_labels

    def __len__(self) -> int:
        return len(cast(Sized, self.base))  # a map-style dataset

    def __getitem__(self, index: int):
        x, target = self.base[index]
        return index, x, -1 if self.hide_labels else target


def _targets(ds: Dataset) -> list[int]:
    # ImageSamples and torchvision's CIFARs call them targets, STL10 labels.
    targets = ds.targets if hasattr(ds, "targets") else cast(Any, ds).labels
    return [int(t) for t in targets]


def take_fraction(ds: Dataset, fraction: float, stratified: bool = True) -> Dataset:
    """A ``fraction`` of ``ds``, stratified by its targets (solo-learn's ``data.fraction``).

    Uses sklearn ``train_test_split(train_size=fraction, stratify=targets, random_state=42)``,
    so every class keeps its share and the subset is the same in every run and process; a plain
    random subset when ``stratified`` is False (no labels). -1 or 1 returns ``ds`` itself.

    Raises:
        DataError: a fraction too small to keep a sample of every class.
    """
    if fraction in (-1.0, 1.0):
        return ds
    size = len(cast(Sized, ds))  # a map-style dataset
    try:
        kept, _ = train_test_split(
            np.arange(size),
            train_size=fraction,
            stratify=_targets(ds) if stratified else None,
            random_state=FRACTION_SEED,
        )
    except ValueError as exc:
        raise DataError(f"data.fraction={fraction!r}: cannot take it of {size} images: {exc}") from exc
    indices = sorted(int(i) for i in kept)
    return ds.subset(indices) if isinstance(ds, ImageSamples) else Subset(ds, indices)


def _finish(ds: Dataset, data_format: str, decode: Literal["pil", "tensor"]) -> Dataset:
    if isinstance(ds, ImageSamples):
        ds.decode = decode
        if data_format == "ram_image_folder":
            ds.load_into_memory()
    return ds


def prepare_pretrain_dataset(
    dataset: str,
    transform: Callable | None,
    train_path: str | None = None,
    data_format: str = "image_folder",
    no_labels: bool = False,
    fraction: float = -1.0,
    download: bool = True,
    decode: Literal["pil", "tensor"] = "pil",
    listings: FolderListings | None = None,
) -> Dataset:
    """The pretraining set of ``dataset``; item ``i`` is ``(i, transform(image_i), target_i)``.

    With ``transform`` a :class:`~solo_ext.data.augmentations.FullTransformPipeline`, the middle
    element is the list of crops, so a DataLoader batch is
    ``[indexes (B,), [crop_0 (B, 3, H, W), ...], targets (B,)]``. Targets are -1 when
    ``no_labels`` (and for STL-10's unlabelled images). Indexes run over the dataset as returned,
    i.e. after ``fraction`` is applied.

    Args:
        train_path: dataset root (cifar/stl) or train folder; default
            ``DATASETS[dataset].train_path`` (under ``./datasets``); ignored for digits.
        data_format: ``image_folder``, ``ram_image_folder`` (every image held in memory) or
            ``dali``.
        no_labels: ``custom`` reads any folder of images; other datasets hide their labels.
        fraction: stratified subset in (0, 1); -1 or 1 for all.
        download: cifar/stl only: download into ``train_path`` when the files are missing.
        decode: image folders only: what ``transform`` receives, ``"pil"`` (an RGB PIL image) or
            ``"tensor"`` (uint8 (3, H, W); see :func:`image_backend`). ``dali`` reads the folder as
            ``image_folder`` does; a :class:`~solo_ext.data.dali.DaliLoader` then decodes it.
        listings: class folders already listed by this run (shared with its other datasets,
            e.g. the clean kNN bank); None lists them for this dataset alone.

    Raises:
        DataError: missing or malformed folders, failed download, undecodable image.
    """
    info = DATASETS[dataset]
    # every dataset but digits (which reads no folder) has a default train folder
    root = cast(str, train_path if train_path is not None else info.train_path)
    key = "data.train_path"
    if dataset in TORCHVISION_DATASETS:
        split = "train+unlabeled" if dataset == "stl10" else "train"
        base = torchvision_dataset(dataset, root, split, transform, download, key)
    elif dataset == "digits":
        base = digits_dataset("train", transform)
    elif dataset == "custom" and no_labels:
        base = flat_folder_dataset(root, key, dataset, transform)
    else:
        base = class_folder_dataset(root, key, dataset, transform, listings=listings)
    base = take_fraction(base, fraction, stratified=not no_labels)
    return IndexedDataset(_finish(base, data_format, decode), hide_labels=no_labels)


def prepare_classification_datasets(
    dataset: str,
    T_train: Callable | None,
    T_val: Callable | None,
    train_path: str | None = None,
    val_path: str | None = None,
    data_format: str = "image_folder",
    fraction: float = -1.0,
    download: bool = True,
    decode: Literal["pil", "tensor"] = "pil",
    listings: FolderListings | None = None,
    train: bool = True,
) -> tuple[Dataset | None, Dataset]:
    """Labelled train and val sets of ``dataset``; items ``(T(image), target)``.

    The val folder is indexed with the train folder's classes, so its labels agree with the
    train labels even if a class is missing from it. ``fraction`` subsamples the train set only.
    Paths default to ``DATASETS[dataset].train_path`` / ``.val_path``; ``custom`` has no default
    val folder. Digits ignore both paths (1,437 train / 360 val images). ``decode``: as for
    :func:`prepare_pretrain_dataset`. ``listings``: as for :func:`prepare_pretrain_dataset` (one
    is made for the two sets when None, so the train folder is listed once). ``train=False``
    builds the val set alone (the train set is None); its labels still come from the train
    folder's classes.

    Raises:
        DataError: missing or malformed folders (``custom`` without ``val_path`` included),
            failed download, undecodable image.
    """
    info = DATASETS[dataset]
    # every dataset but digits (which reads no folder) has a default train folder
    train_root = cast(str, train_path if train_path is not None else info.train_path)
    val_root = val_path if val_path is not None else info.val_path
    if dataset in TORCHVISION_DATASETS:
        train_ds = (
            torchvision_dataset(dataset, train_root, "train", T_train, download, "data.train_path")
            if train
            else None
        )
        # torchvision's datasets have a default val folder
        val = torchvision_dataset(dataset, cast(str, val_root), "test", T_val, download, "data.val_path")
    elif dataset == "digits":
        train_ds = digits_dataset("train", T_train) if train else None
        val = digits_dataset("val", T_val)
    else:
        # the val folder first (a missing one, custom's None included, fails before the train
        # folder is walked), labelled with the train folder's classes
        listings = listings or FolderListings()
        classes = listings.classes(train_root, "data.train_path", dataset)
        if dataset == "tiny-imagenet":
            # tiny-imagenet has a default val folder
            val = tiny_imagenet_val_dataset(cast(str, val_root), "data.val_path", classes, T_val)
        else:
            val = class_folder_dataset(val_root, "data.val_path", dataset, T_val, classes, listings=listings)
        train_ds = (
            class_folder_dataset(train_root, "data.train_path", dataset, T_train, listings=listings)
            if train
            else None
        )
    if train_ds is not None:
        train_ds = _finish(take_fraction(train_ds, fraction), data_format, decode)
    return train_ds, _finish(val, data_format, decode)
