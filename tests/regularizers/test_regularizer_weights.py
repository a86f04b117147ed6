"""A regularizer's weight follows its schedule on the epoch axis: whole epochs by default, the
fraction of the epoch done included with ``interval: step`` (the per-step form of every schedule),
read by the method from the trainer's position in the epoch."""

import csv

import pytest
from omegaconf import OmegaConf

from solo_ext.regularizers.uniformity import Uniformity
from solo_ext.run.pretrain import run_pretrain
from tests.methods.tiny import tiny_cfg

RAMP = {"name": "linear", "start_weight": 0.0, "end_weight": 1.0, "end_epoch": 2}


@pytest.mark.parametrize(
    "interval, expected", [("epoch", [0.0, 0.0, 0.5, 0.5]), ("step", [0.0, 0.25, 0.5, 0.75])]
)
def test_weight_by_whole_or_fractional_epoch(interval, expected):
    reg = Uniformity(Uniformity.Spec.model_validate({"scheduler": {**RAMP, "interval": interval}}))
    # (epoch, fraction of it done): 0, 0.5, 1, 1.5
    positions = [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)]
    assert [reg.weight(step, epoch, fraction) for step, (epoch, fraction) in enumerate(positions)] == expected


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_a_fit_logs_the_weight_of_each_step(tmp_path, monkeypatch, interval):
    # 4 batches per epoch, 2 epochs: per step the ramp moves by 1/8 each step, per epoch by 1/2
    monkeypatch.chdir(tmp_path)
    scheduler = {**RAMP, "interval": interval}
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"regularizers": {"uniformity": {"scheduler": scheduler}}},
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=0,
        knn_eval={"enabled": False},
    )
    run_pretrain(OmegaConf.create(cfg))
    [run_dir] = (tmp_path / "trained_models" / "mae-reg").iterdir()
    rows = csv.DictReader(open(next(run_dir.glob("csv/version_*/metrics.csv"))))
    seen = [
        float(row["train_uniformity_weight_step"]) for row in rows if row.get("train_uniformity_weight_step")
    ]
    if interval == "step":
        assert seen == [step / 8 for step in range(8)]
    else:
        assert seen == [0.0] * 4 + [0.5] * 4


def test_block_indices_at_their_edges():
    """A block index lies in [-depth, depth); negative ones count from the end; without a depth
    an index is left as given; the refusal names the range."""
    from solo_ext.regularizers.base import blocks_text, normalise_block, outside

    assert normalise_block(-1, 6) == 5 and normalise_block(-6, 6) == 0 and normalise_block(5, 6) == 5
    assert normalise_block(-1, None) == -1 and normalise_block(7, None) == 7
    assert not outside(-6, 6) and not outside(5, 6)
    assert outside(-7, 6) and outside(6, 6)
    assert not outside(100, None) and not outside("cls", 6)
    assert blocks_text(None, {"depth": 6}) == "the backbone has 6 blocks; allowed -6..5"
