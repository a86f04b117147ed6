from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from solo_ext.data import (
    DATASETS,
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    num_classes_of,
    prepare_classification_datasets,
    prepare_dataloader,
    prepare_pretrain_dataset,
    prepare_transforms,
)
from solo_ext.data.digits import _digits_split, digits_dataset

TO_TENSOR = T.ToTensor()


def test_split_sizes_images_and_classes():
    train, val = digits_dataset("train"), digits_dataset("val")
    assert (len(train), len(val)) == (1437, 360)
    image, label = train[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert set(train.targets) == set(val.targets) == set(range(10))
    # Stratified: every class keeps about a fifth of its images in val.
    for label, count in Counter(val.targets).items():
        total = count + Counter(train.targets)[label]
        assert abs(count - 0.2 * total) <= 1
    assert num_classes_of("digits", None) == 10


def test_split_is_deterministic_and_disjoint():
    train = np.stack([np.asarray(img) for img, _ in digits_dataset("train")])
    _digits_split.cache_clear()  # rebuild from scikit-learn's files, as a new process would
    again = np.stack([np.asarray(img) for img, _ in digits_dataset("train")])
    assert np.array_equal(train, again)
    val_bytes = {np.asarray(img).tobytes() for img, _ in digits_dataset("val")}
    assert len(val_bytes) == 360
    assert not val_bytes & {t.tobytes() for t in train}


def test_hard_coded_mean_std_match_the_data():
    x = torch.stack([TO_TENSOR(img) for img, _ in digits_dataset("train")]).double()
    assert x.shape == (1437, 3, 32, 32)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.tensor(DATASETS["digits"].mean).double(), atol=1e-4)
    assert torch.allclose(std, torch.tensor(DATASETS["digits"].std).double(), atol=1e-4)


def test_upscale_is_smooth_not_blocky():
    # Bicubic: 4x4 blocks (one ViT patch of size 4) are not flat, unlike a nearest upscale.
    pixels = np.stack([np.asarray(img)[..., 0] for img, _ in digits_dataset("train")][:50]).astype(float)
    blocks = pixels.reshape(50, 8, 4, 8, 4).transpose(0, 1, 3, 2, 4).reshape(50, 64, 16)
    assert (blocks.std(axis=-1) > 0).mean() > 0.5


def test_pretrain_and_classification_on_digits():
    crops = FullTransformPipeline([NCropAugmentation(build_transform_pipeline("digits", {}), 1)])
    pre = prepare_pretrain_dataset("digits", crops, train_path="/ignored")
    batch = next(iter(prepare_dataloader(pre, batch_size=64, num_workers=0)))
    assert batch[0].shape == (64,) and batch[2].shape == (64,)
    assert len(batch[1]) == 1 and batch[1][0].shape == (64, 3, 32, 32)
    t_train, t_val = prepare_transforms("digits")
    train, val = prepare_classification_datasets("digits", t_train, t_val, val_path="/ignored")
    assert (len(train), len(val)) == (1437, 360)
    x, y = val[0]
    assert x.shape == (3, 32, 32) and 0 <= y <= 9
    # Normalised with the dataset statistics: the val set is roughly zero-mean, unit-variance.
    xs = torch.stack([val[i][0] for i in range(len(val))])
    assert abs(float(xs.mean())) < 0.05 and abs(float(xs.std()) - 1) < 0.05


def test_digits_fraction():
    half = prepare_pretrain_dataset("digits", TO_TENSOR, fraction=0.5)
    assert len(half) == 718
    counts = Counter(half[i][2] for i in range(len(half)))
    assert set(counts) == set(range(10)) and max(counts.values()) - min(counts.values()) <= 4


@pytest.mark.parametrize("split", ["test", "training"])
def test_unknown_split(split):
    with pytest.raises(ValueError, match="Input should be 'train' or 'val'"):
        digits_dataset(split)
