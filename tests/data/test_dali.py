"""DALI loaders on DALI's CPU back-end: the batches look like the PyTorch loaders', the order follows
(seed, epoch) alone, every rank does the same number of steps."""

import pytest
import torch

from solo_ext.data import (
    fill_augmentation_defaults,
    prepare_classification_datasets,
    prepare_pretrain_dataset,
)
from solo_ext.data.dali import EpochShards

pytestmark = pytest.mark.dali


def _aug(**keys):
    return fill_augmentation_defaults({"crop_size": 16, **keys}, "custom")


def test_pretraining_batches_look_like_the_pytorch_loaders(noise_folder):
    from solo_ext.data.dali import dali_pretrain_loader

    ds = prepare_pretrain_dataset("custom", None, str(noise_folder), "dali")
    augs = [_aug(num_crops=2, color_jitter={"prob": 0.8}, grayscale={"prob": 0.2}), _aug(crop_size=8)]
    loader = dali_pretrain_loader(ds, augs, batch_size=5, num_workers=1, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 2  # 12 images, drop_last
    indexes, crops, targets = batches[0]
    assert indexes.shape == targets.shape == (5,) and indexes.dtype == targets.dtype == torch.long
    assert [c.shape for c in crops] == [(5, 3, 16, 16), (5, 3, 16, 16), (5, 3, 8, 8)]
    assert all(c.dtype == torch.uint8 for c in crops)
    assert targets.tolist() == [ds.base.targets[i] for i in indexes.tolist()]
    # crops of one image differ (independent draws); the order is the same for the same epoch
    assert not torch.equal(crops[0], crops[1])
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1][0], b[1][0]) for a, b in zip(batches, again))
    loader.sampler.set_epoch(1)
    assert [b[0].tolist() for b in loader] != [b[0].tolist() for b in batches]


def test_hidden_labels(noise_folder):
    from solo_ext.data.dali import dali_pretrain_loader

    ds = prepare_pretrain_dataset("custom", None, str(noise_folder), "dali", no_labels=True)
    _, _, targets = next(iter(dali_pretrain_loader(ds, [_aug()], 4, 1, 0)))
    assert targets.tolist() == [-1] * 4


def test_classification_val_keeps_every_image_in_order(noise_folder):
    from solo_ext.data.dali import dali_classification_loader

    _, val = prepare_classification_datasets(
        "custom", None, None, str(noise_folder), str(noise_folder), "dali"
    )
    loader = dali_classification_loader(val, "custom", 24, 5, 1, 0, train=False)
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [5, 5, 2]
    assert all(x.shape[1:] == (3, 24, 24) and x.dtype == torch.uint8 for x, _ in batches)
    assert torch.cat([y for _, y in batches]).tolist() == val.targets


@pytest.mark.parametrize("num_samples, world", [(24, 2), (25, 2), (10, 3)])
def test_shards_cover_the_epoch_with_equal_steps(monkeypatch, num_samples, world):
    per_rank = []
    for rank in range(world):
        monkeypatch.setattr(EpochShards, "rank_and_world", staticmethod(lambda r=rank: (r, world)))
        shards = EpochShards(num_samples, batch_size=2, shuffle=True, drop_last=False, seed=7)
        shards.set_epoch(4)
        per_rank.append(shards.positions())
    assert len({len(p) for p in per_rank}) == 1  # equal work per rank: padded by wrap-around
    seen = [i for p in per_rank for i in p]
    assert set(seen) == set(range(num_samples)) and len(seen) - num_samples < world


def test_an_undecodable_file_is_named(noise_folder):
    from solo_ext.data.dali import dali_pretrain_loader
    from solo_ext.utils.errors import DataError

    bad = noise_folder / "ant" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)  # a JPEG header and nothing after it
    ds = prepare_pretrain_dataset("custom", None, str(noise_folder), "dali")
    with pytest.raises(DataError, match=f"^cannot decode image '{bad}'"):
        list(dali_pretrain_loader(ds, [_aug()], batch_size=13, num_workers=1, seed=0))


def test_the_config_refuses_an_empty_batch(tmp_path):
    """EpochShards takes batch_size >= 1 from the config (and num_samples >= 1 from the folder
    readers, which refuse a folder without images: tests/data/test_datasets.py)."""
    from solo_ext.config.errors import ConfigError
    from solo_ext.config.pretrain import parse_cfg
    from tests.methods.tiny import tiny_cfg

    optimizer = {"name": "adamw", "batch_size": 0, "lr": 1e-3}
    with pytest.raises(ConfigError, match=r"^optimizer.batch_size=0: must be an integer >= 1"):
        parse_cfg(tiny_cfg(tmp_path, optimizer=optimizer))
