"""The loaders of a pretraining run, from plain arguments: which back-end reads the data, the
crops, the val set and (only when asked) the clean training set of the kNN bank, with one
listing of each image folder shared by all of them."""

from __future__ import annotations

from typing import Literal, TypedDict

import torch

from solo_ext.data.augmentations import FullTransformPipeline, NCropAugmentation
from solo_ext.data.dali import dali_classification_loader, dali_pretrain_loader
from solo_ext.data.datasets import prepare_classification_datasets, prepare_pretrain_dataset
from solo_ext.data.folders import FolderListings
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

    def eval_loader(ds):
        if backend == "dali":
            return dali_classification_loader(
                ds, dataset, crop_size, batch_size, num_workers, seed, train=False
            )
        return prepare_dataloader(ds, batch_size, num_workers, shuffle=False, drop_last=False)

    loaders = [eval_loader(val_ds)]
    if clean_train_ds is not None:
        loaders.append(eval_loader(clean_train_ds))
    return train_loader, loaders
