"""The online kNN's ``bank: batches`` holds at most one epoch of training features whatever
``check_val_every_n_epoch`` is, its size is stated before the run, and ``knn_eval.max_bank`` caps
it with a uniform sample that leaves the training's random streams alone."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.eval.online import OnlineEvaluation, bank_size
from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.tiny import tiny_cfg

STEPS, BATCH = 4, 16  # per epoch: 64 rows of one large crop


def bank_run(tmp_path, capsys, **knn):
    cfg = tiny_cfg(
        tmp_path,
        method="mae",
        max_epochs=6,
        check_val_every_n_epoch=3,
        limit_train_batches=STEPS,
        limit_val_batches=1,
        knn_eval={"enabled": True, **knn},
    )
    trainer = run_pretrain(OmegaConf.create(cfg))
    (run_dir,) = (tmp_path / "trained_models" / "mae").iterdir()
    rows = [row for path in run_dir.glob("csv/version_*/metrics.csv") for row in csv.DictReader(open(path))]
    banks = [(int(row["epoch"]), float(row["knn_bank_rows"])) for row in rows if row.get("knn_bank_rows")]
    args = json.loads((run_dir / "args.json").read_text())
    return trainer, banks, args, capsys.readouterr().out, run_dir


def test_the_bank_holds_one_epoch_when_validating_every_third_epoch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, banks, args, out, _ = bank_run(tmp_path, capsys)
    # validations after epochs 2 and 5 (and the untrained baseline, whose bank is empty)
    assert [bank for bank in banks if bank[1] > 0] == [(2, STEPS * BATCH), (5, STEPS * BATCH)]
    expected = {"rows": STEPS * BATCH, "bytes": STEPS * BATCH * (32 * 4 + 8)}
    assert args["derived"]["knn_bank"] == {**expected, "bytes_gathered": expected["bytes"]}
    assert f"online kNN bank: at most {STEPS * BATCH:,} rows per process" in out


def test_max_bank_caps_the_rows_and_leaves_training_unchanged(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path / "..")
    whole, capped = tmp_path / "whole", tmp_path / "capped"
    _, _, _, _, whole_dir = bank_run(whole, capsys)
    _, banks, args, out, capped_dir = bank_run(capped, capsys, max_bank=40)
    assert [bank for bank in banks if bank[1] > 0] == [(2, 40), (5, 40)]
    assert args["derived"]["knn_bank"]["rows"] == 40
    assert "a uniform sample of at most 40 rows per process" in args["derived"]["protocols"]["online_knn"]
    weights = [
        torch.load(checkpoints_in(d)[-1], weights_only=False)["state_dict"] for d in (whole_dir, capped_dir)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_capped_sample_is_uniform_over_the_epoch():
    """400 rows of 20 batches through a bank of 100, many times: every row of the epoch is kept
    with probability 1/4, the first batches as often as the last (a bank that kept only the newest
    or the oldest rows fails this)."""
    knn = {"enabled": True, "k": 5, "T": 0.1, "distance_func": "cosine", "bank": "batches", "max_bank": 100}
    kept = torch.zeros(400)

    class Trainer:
        check_val_every_n_epoch, current_epoch = 1, 0

    trials = 200
    for seed in range(trials):
        online = OnlineEvaluation(knn, num_classes=4, max_samples=None)
        online.start_train_epoch(Trainer, seed)
        for batch in torch.arange(400.0).split(20):
            online.bank_batch(batch[:, None].repeat(1, 2), torch.zeros(20, dtype=torch.long))
        ids = online._sample[0][:, 0].long()
        assert ids.unique().numel() == 100  # without replacement
        kept[ids] += 1
    rate = kept / trials
    assert abs(rate.mean().item() - 0.25) < 1e-6
    # first and last quarter of the epoch equally kept (binomial sd of a quarter's mean ~0.003)
    assert abs(rate[:100].mean().item() - rate[300:].mean().item()) < 0.03


@pytest.mark.parametrize("precision, width", [("32-true", 4), ("bf16-mixed", 2)])
def test_bank_size_in_bytes_and_after_the_gather(precision, width):
    size = bank_size({"enabled": True, "bank": "batches"}, 10, 8, 2, 4, 16, precision)
    rows = 3 * 8 * 2  # ceil(10 batches / 4 processes) x 8 x 2 crops
    assert size == {
        "rows": rows,
        "bytes": rows * (16 * width + 8),
        "bytes_gathered": 4 * rows * (16 * width + 8),
    }
    assert bank_size({"enabled": True, "bank": "clean"}, 10, 8, 2, 4, 16, precision) is None
