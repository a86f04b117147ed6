"""main_linear.py from the command line: a digits recipe end to end, and the errors that must stop
it with exit code 2 and one message before anything is written."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.methods.test_linear_model import save_tiny_pretrained

MAIN = Path(__file__).resolve().parents[2] / "main_linear.py"
QUICK = ["max_epochs=1", "+limit_train_batches=2", "+limit_val_batches=1", "wandb.enabled=False"]
# linear.yaml is the offline probe (mode: probe): a short grid, no random baseline
PROBE_QUICK = ["probe.epochs=2", "probe.lrs=[0.1]", "probe.random_baseline=False", "wandb.enabled=False"]


def run_main(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, str(MAIN), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_finetune_recipe_runs_and_logs_val_acc1(tmp_path):
    pretrained = save_tiny_pretrained(tmp_path)
    out = tmp_path / "out"
    result = run_main(
        tmp_path,
        "--config-name",
        "finetune.yaml",
        f"pretrained_feature_extractor={pretrained.parent}",
        f"checkpoint.dir={out}",
        "optimizer.batch_size=16",
        *QUICK,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = list((out / "linear").iterdir())
    assert len(list(run.glob("mae-digits-finetune-*-ep=0.ckpt"))) == 1
    rows = [row for path in run.glob("csv/version_*/metrics.csv") for row in csv.DictReader(open(path))]
    assert any(row.get("val_acc1") for row in rows) and any(row.get("val_effective_rank") for row in rows)
    results = json.loads((run / "results.json").read_text())
    acc = results["metrics"]["val_acc1"]
    assert acc["protocol"] == "finetune on mean features, BatchNorm (no affine) + linear head"
    assert f"results: {run / 'results.json'}" in result.stdout


def test_checkpoint_with_missing_keys_stops_with_the_keys_and_writes_nothing(tmp_path):
    pretrained = save_tiny_pretrained(tmp_path)
    ckpt = torch.load(pretrained, weights_only=True)
    del ckpt["state_dict"]["backbone.blocks.1.mlp.fc1.weight"]
    torch.save(ckpt, pretrained)
    before = files_under(tmp_path)
    # the file name's '=' quoted for Hydra, as the recipes' comments say
    result = run_main(
        tmp_path, "--config-name", "linear.yaml", f'pretrained_feature_extractor="{pretrained}"', *PROBE_QUICK
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "1 missing: blocks.1.mlp.fc1.weight" in result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path) == before


def test_random_backbone_is_refused_without_the_flag(tmp_path):
    result = run_main(tmp_path, "--config-name", "linear.yaml")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: pretrained_feature_extractor=None: no checkpoint given")
    assert "++allow_random_backbone=True" in line
    assert files_under(tmp_path) == set()


@pytest.mark.slow  # a subprocess each (~25 s on 2 busy cores)
@pytest.mark.parametrize("data_format", ["image_folder", pytest.param("dali", marks=pytest.mark.dali)])
def test_probe_recipe_on_a_jpeg_folder(tmp_path, data_format):
    """The shipped probe recipe on an image folder (read through PIL, DALI's format included),
    the chosen setting printed and stored beside the accuracy."""
    from tests.data.ddp_epoch import write_folder

    write_folder(tmp_path / "train", classes=3, per_class=8)
    write_folder(tmp_path / "val", classes=3, per_class=3)
    pretrained = save_tiny_pretrained(tmp_path)
    out = tmp_path / "out"
    result = run_main(
        tmp_path,
        "--config-name",
        "linear.yaml",
        f"pretrained_feature_extractor={pretrained.parent}",
        f"checkpoint.dir={out}",
        "data.dataset=custom",
        f"++data.train_path={tmp_path / 'train'}",
        f"++data.val_path={tmp_path / 'val'}",
        f"++data.format={data_format}",
        "probe.batch_size=8",
        "probe.holdout_fraction=0.25",
        *PROBE_QUICK,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = list((out / "linear").iterdir())
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["metrics"]["val_acc1"]["final"] <= 100
    assert results["probe"]["chosen"]["lr"] == 0.1
    assert "(chosen: lr 0.1, weight decay" in result.stdout
