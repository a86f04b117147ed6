"""Datasets, augmentation pipelines and loaders, in solo-learn's conventions.

Pretraining::

    pipelines = [
        NCropAugmentation(build_transform_pipeline(dataset, aug), aug["num_crops"])
        for aug in (fill_augmentation_defaults(a, dataset) for a in cfg)
    ]
    ds = prepare_pretrain_dataset(dataset, FullTransformPipeline(pipelines), train_path, data_format)
    loader = prepare_dataloader(ds, batch_size, num_workers)
    # batches: [idx (B,), [crop_0 (B, 3, H, W), ...], targets (B,)]

Classification: ``prepare_transforms`` -> ``prepare_classification_datasets`` -> ``prepare_dataloader``
(``shuffle=False, drop_last=False`` for val), batches ``[x (B,3,H,W), y (B,)]``.

Back-ends (:func:`~solo_ext.data.loaders.image_backend`): the above is the PIL one (normalised
float batches; CIFAR, STL-10, digits, and the reference). Image folders are read by default by
the tensor back-end (:mod:`solo_ext.data.tensor_pipeline`: ``build_tensor_pipeline`` on the same
filled entry, ``decode="tensor"`` datasets, uint8 batches) or, with ``data.format: dali``, by
:mod:`solo_ext.data.dali` (``DaliLoader``: the same batch structure, uint8). uint8 batches are
normalised on the device by the LightningModules (``normalize_images``).
"""

from solo_ext.data.augmentations import (
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    fill_augmentation_defaults,
    prepare_transforms,
)
from solo_ext.data.datasets import (
    IndexedDataset,
    prepare_classification_datasets,
    prepare_pretrain_dataset,
)
from solo_ext.data.folders import FolderListings
from solo_ext.data.info import DATASETS, DatasetInfo, dataset_mean_std, num_classes_of
from solo_ext.data.loaders import DATA_FORMATS, image_backend, prepare_dataloader

__all__ = [
    "DATASETS",
    "DATA_FORMATS",
    "DatasetInfo",
    "FolderListings",
    "FullTransformPipeline",
    "IndexedDataset",
    "NCropAugmentation",
    "build_transform_pipeline",
    "dali_installed",
    "dataset_mean_std",
    "fill_augmentation_defaults",
    "image_backend",
    "num_classes_of",
    "prepare_classification_datasets",
    "prepare_dataloader",
    "prepare_pretrain_dataset",
    "prepare_transforms",
]
