"""The loaders of a pretraining or linear-evaluation run, from plain arguments: which back-end
reads the data, the crops, the val set and (only when asked) the clean training set of the kNN
bank, with one listing of each image folder shared by all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypedDict, cast

import torch
from timm.data import create_transform

from solo_ext.data.augmentations import FullTransformPipeline, NCropAugmentation
from solo_ext.data.dali import dali_classification_loader, dali_pretrain_loader
from solo_ext.data.datasets import prepare_classification_datasets, prepare_pretrain_dataset
from solo_ext.data.folders import FolderListings, ImageSamples
from solo_ext.data.info import dataset_mean_std
from solo_ext.data.loaders import (
    classification_transforms,
    image_backend,
    prepare_dataloader,
    pretrain_transform,
)


class ReadingArgs(TypedDict):
    """How every dataset of a run reads its folders."""

    data_format: str
    fraction: float
    decode: Literal["pil", "tensor"]
    listings: FolderListings


# datasets whose val split is a folder the user must name (no val_path: no val loader)
FOLDER_DATASETS = ("custom", "imagenet", "imagenet100")
# timm's RandAugment policy with random erasing, solo-learn's (and MAE's) fine-tuning augmentation
AUTO_AUGMENT_POLICY, RANDOM_ERASE_PROB = "rand-m9-mstd0.5-inc1", 0.25


def in_order_loaders(
    backend: str, dataset: str, crop_size: int, batch_size: int, num_workers: int, seed: int
) -> Callable[[Any], Any]:
    """A maker of loaders that read a dataset in order, every sample once (val sets, the clean
    kNN bank), with the run's back-end."""

    def loader(ds):
        if backend == "dali":
            return dali_classification_loader(
                ds, dataset, crop_size, batch_size, num_workers, seed, train=False
            )
        return prepare_dataloader(ds, batch_size, num_workers, shuffle=False, drop_last=False)

    return loader


def pretrain_loaders(
    dataset: str,
    *,
    train_path: str | None,
    val_path: str | None,
    data_format: str,
    fraction: float,
    no_labels: bool,
    num_workers: int,
    augmentations: list[dict],
    batch_size: int,
    seed: int,
    clean_bank: bool,
):
    """(train loader of ``[idx, [crops], y]``, list of val loaders: the val set and, with
    ``clean_bank``, the training set under the val transform for the kNN bank).

    Image folders are read by the tensor back-end (uint8 batches) or, with ``data_format: dali``,
    by DALI (:func:`~solo_ext.data.loaders.image_backend`); the methods normalise uint8 batches
    on the device."""
    backend = image_backend(dataset, data_format)
    transform = None
    if backend != "dali":
        transform = FullTransformPipeline(
            [
                NCropAugmentation(pretrain_transform(backend, dataset, aug), aug["num_crops"])
                for aug in augmentations
            ]
        )
    # how every dataset of this run reads its folders (sharing their listings)
    decode: Literal["pil", "tensor"] = "tensor" if backend == "tensor" else "pil"
    reading = ReadingArgs(
        data_format=data_format, fraction=fraction, decode=decode, listings=FolderListings()
    )
    train_ds = prepare_pretrain_dataset(
        dataset, transform, train_path=train_path, no_labels=no_labels, **reading
    )
    if backend == "dali":
        train_loader = dali_pretrain_loader(train_ds, augmentations, batch_size, num_workers, seed)
    else:
        # Its own generator, re-seeded every epoch by the method (see BaseMethod.seed_epoch): the
        # shuffling does not depend on when Lightning happens to create the iterator.
        train_loader = prepare_dataloader(train_ds, batch_size, num_workers, generator=torch.Generator())
    if no_labels or (val_path is None and dataset in FOLDER_DATASETS):
        return train_loader, []
    crop_size = max(aug["crop_size"] for aug in augmentations)
    val_transform = None
    if backend != "dali":
        _, val_transform = classification_transforms(backend, dataset, crop_size, augmentations[0])
    clean_train_ds, val_ds = prepare_classification_datasets(
        dataset,
        val_transform,
        val_transform,
        train_path=train_path,
        val_path=val_path,
        train=clean_bank,
        **reading,
    )

    in_order = in_order_loaders(backend, dataset, crop_size, batch_size, num_workers, seed)
    return train_loader, [in_order(ds) for ds in (val_ds, clean_train_ds) if ds is not None]


def linear_loaders(
    dataset: str,
    *,
    train_path: str | None,
    val_path: str | None,
    data_format: str,
    fraction: float,
    num_workers: int,
    crop_size: int,
    batch_size: int,
    seed: int,
    auto_augment: bool,
    clean_bank: bool,
):
    """(train loader of ``[x (B, 3, crop_size, crop_size), y (B,)]``, [val loader] plus, with
    ``clean_bank``, the training set under the val transform for the kNN bank).

    Training images are randomly resized crops (timm's RandAugment and random erasing on top with
    ``auto_augment``, on PIL images). Image folders come as uint8 (tensor or DALI back-end),
    normalised by LinearModel on the device. (``auto_augment`` with DALI is refused by the config
    layer.)"""
    backend = "pil" if auto_augment else image_backend(dataset, data_format)  # RandAugment reads PIL
    train_transform = val_transform = None
    if backend != "dali":
        train_transform, val_transform = classification_transforms(backend, dataset, crop_size)
    if auto_augment:
        mean, std = dataset_mean_std(dataset)
        train_transform = create_transform(
            crop_size,
            is_training=True,
            auto_augment=AUTO_AUGMENT_POLICY,
            interpolation="bicubic",
            re_prob=RANDOM_ERASE_PROB,
            re_mode="pixel",
            mean=mean,
            std=std,
        )
    decode: Literal["pil", "tensor"] = "tensor" if backend == "tensor" else "pil"
    reading = ReadingArgs(
        data_format=data_format, fraction=fraction, decode=decode, listings=FolderListings()
    )
    train_ds, val_ds = prepare_classification_datasets(
        dataset, train_transform, val_transform, train_path=train_path, val_path=val_path, **reading
    )
    assert train_ds is not None  # (asked for: train=True)
    if backend == "dali":
        train_loader = dali_classification_loader(
            cast(ImageSamples, train_ds),  # the DALI back-end reads image folders only
            dataset,
            crop_size,
            batch_size,
            num_workers,
            seed,
            train=True,
        )
    else:
        train_loader = prepare_dataloader(train_ds, batch_size, num_workers)
    in_order = in_order_loaders(backend, dataset, crop_size, batch_size, num_workers, seed)
    loaders = [in_order(val_ds)]
    if clean_bank:
        # the same listing of the training folder, read through the val transform
        clean_train_ds, _ = prepare_classification_datasets(
            dataset, val_transform, val_transform, train_path=train_path, val_path=val_path, **reading
        )
        loaders.append(in_order(clean_train_ds))
    return train_loader, loaders
