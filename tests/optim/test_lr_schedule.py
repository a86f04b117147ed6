"""The learning-rate schedule a pretraining run follows: every lr of the config (``warmup_start_lr``
and ``min_lr`` included) scaled by the global batch / 256, per step or per epoch (``interval``),
read back from what the optimizer ran at (the lr monitor's column in metrics.csv)."""

import csv
import math

import pytest
from omegaconf import OmegaConf

from solo_ext.config.pretrain import parse_cfg
from solo_ext.run.pretrain import run_pretrain
from tests.methods.tiny import tiny_cfg

BATCHES, EPOCHS = 4, 3


@pytest.mark.parametrize("devices, accumulate", [(1, 2), (2, 1), (2, 3)])
def test_warmup_start_lr_and_min_lr_are_scaled_like_lr(tmp_path, devices, accumulate):
    scheduler = {"name": "warmup_cosine", "warmup_epochs": 1, "warmup_start_lr": 3e-5, "min_lr": 1e-5}
    cfg = parse_cfg(
        tiny_cfg(
            tmp_path,
            accumulate_grad_batches=accumulate,
            scheduler=scheduler,
            devices=devices,
            strategy="ddp" if devices > 1 else "auto",
        )
    )
    scale = 16 * devices * accumulate / 256
    assert cfg.derived.global_batch_size == 16 * devices * accumulate
    assert cfg.derived.lr_scale == pytest.approx(scale)
    assert cfg.derived.lr == pytest.approx(1e-3 * scale)
    assert cfg.derived.classifier_lr == pytest.approx(1e-2 * scale)
    assert cfg.derived.warmup_start_lr == pytest.approx(3e-5 * scale)
    assert cfg.derived.min_lr == pytest.approx(1e-5 * scale)
    assert cfg.scheduler.warmup_start_lr == 3e-5  # the user's value stays as written


def _expected(position: float, peak: float, start: float, end: float, warmup: float, total: float):
    """Linear from start to peak over ``warmup``, then half a cosine down to end at ``total``."""
    if position < warmup:
        return start + (peak - start) * position / warmup
    return end + (peak - end) * (1 + math.cos(math.pi * (position - warmup) / (total - warmup))) / 2


def _lrs_by_step(run_dir, group):
    rows = list(csv.DictReader(open(next(run_dir.glob("csv/version_*/metrics.csv")))))
    key = f"lr-AdamW/{group}"
    return [float(row[key]) for row in rows if row.get(key)]


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_optimizer_follows_the_scaled_schedule(tmp_path, monkeypatch, capsys, interval):
    monkeypatch.chdir(tmp_path)
    scheduler = {
        "name": "warmup_cosine",
        "warmup_epochs": 1,
        "warmup_start_lr": 3e-4,
        "min_lr": 1e-4,
        "interval": interval,
    }
    cfg = tiny_cfg(
        tmp_path,
        max_epochs=EPOCHS,
        limit_train_batches=BATCHES,
        limit_val_batches=0,
        scheduler=scheduler,
        knn_eval={"enabled": False},
    )
    run_pretrain(OmegaConf.create(cfg))
    [run_dir] = (tmp_path / "trained_models" / "mae-reg").iterdir()
    scale = 16 / 256
    # the scaled lr is printed at start-up
    start_up = (
        f"run {run_dir.name}: 1 process(es), global batch 16, lr 0.001 x 0.0625 = 6.25e-05 -> {run_dir}"
    )
    assert start_up in capsys.readouterr().out.splitlines()
    start, end = 3e-4 * scale, 1e-4 * scale
    for group, peak in (("backbone", 1e-3 * scale), ("classifier", 1e-2 * scale)):
        lrs = _lrs_by_step(run_dir, group)
        assert len(lrs) == BATCHES * EPOCHS
        if interval == "step":  # the position is the step, the warm-up one epoch of steps
            expected = [_expected(s, peak, start, end, BATCHES, BATCHES * EPOCHS) for s in range(len(lrs))]
        else:  # the position is the epoch: constant over each epoch's steps
            expected = [_expected(s // BATCHES, peak, start, end, 1, EPOCHS) for s in range(len(lrs))]
        assert lrs == pytest.approx(expected, rel=1e-9), group
