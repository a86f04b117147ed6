"""Bad configs stop before anything is written; a non-finite loss stops the run naming the
component and leaves the last checkpoint untouched."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import solo_ext.regularizers.uniformity as uniformity_module
from solo_ext.config.errors import ConfigError
from solo_ext.config.pretrain import parse_cfg
from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.errors import DataError, NonFiniteLossError
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.tiny import tiny_cfg

REPO = Path(__file__).resolve().parents[2]


def _set(cfg: dict, dotted: str, value):
    node = cfg
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


BAD = [
    ("method", "maee", "did you mean 'mae'"),
    ("backbone.name", "vit_tinyy", "did you mean 'vit_tiny'"),
    ("data.dataset", "cifar11", "data.dataset='cifar11'"),
    ("optimizer.name", "adamm", "did you mean 'adam'"),
    ("scheduler.name", "warmup_cosin", "did you mean 'warmup_cosine'"),
    ("method_kwargs.mask_ratio", 1.2, "method_kwargs.mask_ratio=1.2"),
    ("method_kwargs.mask_ratio", "high", "method_kwargs.mask_ratio='high'"),
    ("optimizer.lr", -1.0, "optimizer.lr=-1.0"),
    ("optimizer.lr", True, "optimizer.lr=True"),
    ("optimizer.batch_size", 0, "optimizer.batch_size=0"),
    ("optimizer.batch_size", 3.5, "optimizer.batch_size=3.5"),
    ("knn_eval.k", 0, "knn_eval.k=0"),
    ("knn_eval.distance_func", "manhattan", "knn_eval.distance_func='manhattan'"),
    ("data.fraction", 1.5, "data.fraction=1.5"),
    ("scheduler.warmup_epochs", -1, "scheduler.warmup_epochs=-1"),
    ("backbone.kwargs.patch_size", 5, "backbone.kwargs.patch_size=5"),
    ("backbone.kwargs.num_heads", 3, "backbone.kwargs.num_heads=3"),
    ("backbone.kwargs.img_size", 64, "backbone.kwargs.img_size=64"),
    ("backbone.kwargs.depthh", 2, "backbone.kwargs"),
    ("precision", "8-mixed", "precision='8-mixed'"),
    ("accelerator", "gpu", "accelerator='gpu'"),
    ("max_epochs", 0, "max_epochs=0"),
    ("optimizer.weight_decy", 0.1, "did you mean 'weight_decay'"),
    ("max_epoch", 3, "did you mean 'max_epochs'"),
    ("data.format", "lmdb", "data.format='lmdb'"),
    ("data.format", "dali", "data.format='dali'"),
    ("method_kwargs.regularizers", {"magma": {"layers": [7], "weight": 1}}, "layers[0]=7"),
    ("method_kwargs.regularizers", {"magma": {"layers": [0], "weight": 1, "rbf_scale": 0}}, "rbf_scale=0"),
    (
        "method_kwargs.regularizers",
        {"magma": {"layers": [0], "weight": 1, "fixed_gamma": 0}},
        "fixed_gamma=0",
    ),
    ("method_kwargs.regularizers", {"tcr": {"weight": 1, "mu": 0}}, "tcr.mu=0"),
    (
        "method_kwargs.regularizers",
        {"tcr": {"scheduler": {"name": "warmup", "warmup_epochs": -1, "weight": 1}}},
        "warmup_epochs=-1",
    ),
    ("augmentations", [{"crop_size": 32, "horizontal_flip": {"prob": 2.0}}], "horizontal_flip.prob=2.0"),
    ("data.train_path", "/no/such/folder", "/no/such/folder"),
    # this stop's keys: a job's name, mid-epoch states, the kNN bank's cap
    ("run_name", "", "run_name=''"),
    ("checkpoint", {"enabled": True, "every_n_steps": 0}, "checkpoint.every_n_steps=0"),
    ("checkpoint", {"enabled": True, "every_n_minutes": -1}, "checkpoint.every_n_minutes=-1"),
    ("knn_eval", {"enabled": True, "max_bank": 0}, "knn_eval.max_bank=0"),
    # the real optimizer judges its keywords, at construction or at its first step
    ("optimizer.kwargs", {"betas": [0.9]}, "optimizer.kwargs.betas=[0.9]: the adamw optimizer refuses it"),
    ("optimizer.kwargs", {"betaz": 0.9}, "optimizer.kwargs.betaz=0.9: the adamw optimizer refuses it"),
    ("optimizer.kwargs", {"fused": True, "foreach": True}, "the adamw optimizer refuses it"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_is_one_line_naming_the_key(tmp_path, key, value, message):
    cfg = _set(tiny_cfg(tmp_path, max_epochs=2), key, value)
    if key == "data.train_path":
        cfg["data"]["dataset"] = "imagenet100"
    # a missing data folder is found when the data is prepared (DataError), the rest in the config
    expected = DataError if key == "data.train_path" else ConfigError
    with pytest.raises(expected) as err:
        run_pretrain(OmegaConf.create(cfg))
    assert type(err.value) is expected
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text
    assert not (tmp_path / "trained_models").exists()  # nothing written


CLI_REFUSALS = {
    "method_kwargs.mask_ratio=1.5": "error: method_kwargs.mask_ratio=1.5: must be a number in [0, 1)",
    # Lightning's own refusal (the config layer asks a Trainer), named by the key
    "accelerator=gpu": "error: accelerator='gpu': No supported gpu backend found! (available here: cpu)",
    # torch's AdamW refuses it (IndexError), before the run folder or wandb files are written
    "optimizer.kwargs.betas=[0.9]": "error: optimizer.kwargs.betas=[0.9]: the adamw optimizer refuses it: "
    "IndexError: list index out of range (its default: (0.9, 0.999))",
}


@pytest.mark.parametrize("override", list(CLI_REFUSALS))
def test_cli_exit_code_2_one_line_nothing_written(tmp_path, override):
    if override.startswith("accelerator") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "main_pretrain.py"),
            "--config-name",
            "mae.yaml",
            override,
            f"checkpoint.dir={tmp_path / 'tm'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == CLI_REFUSALS[override]
    assert list(tmp_path.iterdir()) == []


def test_nan_stops_the_run_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"regularizers": {"uniformity": {"weight": 0.1}}},
        max_epochs=2,
        auto_resume={"enabled": True},
    )
    run_pretrain(OmegaConf.create({**cfg, "max_epochs": 2, "limit_train_batches": 2}))
    (run_dir,) = (tmp_path / "trained_models" / "mae-reg").iterdir()
    (ckpt,) = checkpoints_in(run_dir)
    before = ckpt.read_bytes()

    monkeypatch.setattr(uniformity_module, "uniformity_loss", lambda z: torch.tensor(float("nan")))
    cfg = {**cfg, "max_epochs": 3, "limit_train_batches": 2}
    with pytest.raises(NonFiniteLossError) as err:
        run_pretrain(OmegaConf.create({**cfg, "resume_from_checkpoint": str(ckpt)}))
    assert "train_uniformity_loss" in str(err.value) and "global step 4" in str(err.value)
    assert checkpoints_in(run_dir) == [ckpt] and ckpt.read_bytes() == before


@pytest.mark.slow
def test_200_bf16_steps_with_all_regularizers_stay_finite(tmp_path, monkeypatch):
    from tests.methods.tiny import ALL_REGULARIZERS

    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"regularizers": ALL_REGULARIZERS},
        precision="bf16-mixed",
        max_epochs=3,
        limit_train_batches=67,
        limit_val_batches=1,
        knn_eval={"enabled": False},
        checkpoint={"enabled": False, "dir": str(tmp_path / "tm")},
    )
    trainer = run_pretrain(OmegaConf.create(cfg))  # the finiteness check runs at every step
    assert trainer.global_step == 201
    assert parse_cfg(cfg).precision == "bf16-mixed"
