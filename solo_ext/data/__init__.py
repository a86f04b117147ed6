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
from solo_ext.data.info import DATASETS, DatasetInfo, dataset_mean_std, num_classes_of
from solo_ext.data.loaders import DATA_FORMATS, dali_installed, prepare_dataloader

__all__ = [
    "DATASETS",
    "DATA_FORMATS",
    "DatasetInfo",
    "FullTransformPipeline",
    "IndexedDataset",
    "NCropAugmentation",
    "build_transform_pipeline",
    "dali_installed",
    "dataset_mean_std",
    "fill_augmentation_defaults",
    "num_classes_of",
    "prepare_classification_datasets",
    "prepare_dataloader",
    "prepare_pretrain_dataset",
    "prepare_transforms",
]
