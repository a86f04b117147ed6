"""wandb sweep files and Hydra multirun over ``main_pretrain.py``.

- Every shipped sweep passes the dry run, whose arguments are the ones wandb's agent would write.
- A broken sweep (a value parse_cfg refuses, a key the config lacks) fails with the key named.
- ``-m`` runs one job per value on Hydra's basic launcher and refuses in-process DDP.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

import sweep_dry_run
from solo_ext.config.errors import ConfigError
from solo_ext.config.pretrain import parse_cfg
from solo_ext.run.pretrain import check_not_multirun_ddp, run_pretrain
from solo_ext.run.sweeps import (
    DEFAULT_CONFIG_DIR,
    compose_config,
    dry_run,
    fixed_arguments,
    load_sweep,
    parameter_values,
    resolve_config_dir,
    sweep_points,
)

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "scripts" / "sweeps").glob("*.yaml"))
COMMAND = [
    "${env}",
    "${interpreter}",
    "${program}",
    "--config-name",
    "mae-reg-uniformity.yaml",
    "auto_resume.enabled=False",
    "${args_no_hyphens}",
]


def write_sweep(tmp_path: Path, parameters: dict, method: str = "grid") -> Path:
    sweep = {
        "program": "main_pretrain.py",
        "method": method,
        "metric": {"name": "val_knn_acc1", "goal": "maximize"},
        "parameters": parameters,
        "command": COMMAND,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweeps_are_shipped():
    names = {p.name for p in SWEEPS}
    assert {"uniformity_weight.yaml", "tcr_mu.yaml", "magma_layers_schedule.yaml", "mask_ratio.yaml"} <= names


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_passes_dry_run(sweep_file):
    sweep = load_sweep(sweep_file)
    assert sweep["program"] == "main_pretrain.py"
    assert sweep["metric"] == {"name": "val_knn_acc1", "goal": "maximize"}
    lines = []
    assert dry_run(sweep_file, echo=lines.append) == 0, "\n".join(lines)
    expected = 1
    for key, spec in sweep["parameters"].items():
        expected *= len(parameter_values(key, spec, sweep["method"]))
    assert lines.count("  OK") == expected > 1
    assert all(line.startswith("python main_pretrain.py --config-name ") for line in lines[::2])


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: p.name)
def test_arguments_are_written_as_the_wandb_agent_writes_them(sweep_file):
    sweep = load_sweep(sweep_file)
    params = sweep["parameters"]
    grids = [parameter_values(key, spec, sweep["method"]) for key, spec in params.items()]
    for words, point in zip(sweep_points(sweep), itertools.product(*grids), strict=True):
        agent_args = {key: {"value": value} for key, value in zip(params, point, strict=True)}
        assert create_sweep_command_args({"args": agent_args})["args_no_hyphens"] == words


def test_ranges_are_tried_at_min_middle_max():
    log = {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}
    assert parameter_values("w", log, "bayes") == pytest.approx([0.01, 0.1, 1.0])
    assert parameter_values("n", {"min": 0, "max": 10}, "random") == [0, 5, 10]
    with pytest.raises(ConfigError, match="parameters.w"):
        parameter_values("w", log, "grid")  # a grid cannot enumerate a range


def test_fixed_arguments_are_read_from_the_command():
    expected = (None, "mae-reg-uniformity.yaml", ["auto_resume.enabled=False"])
    assert fixed_arguments({"command": COMMAND}) == expected


def test_refused_value_is_caught_with_its_key(tmp_path):
    path = write_sweep(tmp_path, {"method_kwargs.mask_ratio": {"values": [0.75, 1.5]}})
    lines = []
    assert dry_run(path, echo=lines.append) == 1
    assert lines[1] == "  OK"
    assert lines[3].startswith("  FAILED: method_kwargs.mask_ratio=1.5")


def test_unknown_key_is_caught_with_its_key(tmp_path):
    path = write_sweep(tmp_path, {"method_kwargs.mask_ration": {"min": 0.5, "max": 0.9}}, method="bayes")
    lines = []
    assert dry_run(path, echo=lines.append) == 3
    failures = [line for line in lines if line.startswith("  FAILED")]
    assert len(failures) == 3 and all("method_kwargs.mask_ration" in line for line in failures)


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    broken = write_sweep(tmp_path, {"method_kwargs.mask_ratio": {"values": [1.5]}})
    monkeypatch.setattr(sys, "argv", ["sweep_dry_run.py", str(broken), "--max", "1"])
    assert sweep_dry_run.main() == 1
    assert "FAILED: method_kwargs.mask_ratio=1.5" in capsys.readouterr().out
    broken.write_text("method: grid\nparameters: {}\n")
    with pytest.raises(SystemExit) as exit_:
        sweep_dry_run.main()
    assert exit_.value.code == 2
    assert "parameters={}" in capsys.readouterr().err


def run_main(cwd: Path, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SOLO_EXT_"))}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, str(REPO / "main_pretrain.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


MULTIRUN = [
    "-m",
    "--config-name",
    "mae.yaml",
    "method_kwargs.mask_ratio=0.5,0.75",
    "max_epochs=1",
    "++limit_train_batches=2",
    "++limit_val_batches=1",
    "optimizer.batch_size=16",
    "scheduler.warmup_epochs=0",
    "wandb.enabled=False",
    "diagnostics.validate_before_training=False",
]


def test_multirun_mode_refuses_in_process_ddp_before_writing(tmp_path):
    """run_pretrain as a multirun job sees it: Hydra's config in MULTIRUN mode, devices=2."""
    overrides = [
        "hydra.mode=MULTIRUN",
        "devices=2",
        "strategy=ddp",
        "accelerator=cpu",
        f"checkpoint.dir={tmp_path / 'tm'}",
    ]
    with initialize_config_dir(config_dir=str(DEFAULT_CONFIG_DIR), version_base="1.2"):
        full = compose(config_name="mae.yaml", overrides=overrides, return_hydra_config=True)
    job_cfg = OmegaConf.masked_copy(full, [key for key in full if key != "hydra"])
    HydraConfig.instance().set_config(full)
    try:
        with pytest.raises(ConfigError, match=r"devices=2: in-process DDP inside a Hydra multirun"):
            run_pretrain(job_cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert not (tmp_path / "tm").exists()
    # The same config outside a multirun passes the check (it is the mode that is refused).
    check_not_multirun_ddp(parse_cfg(job_cfg))


@pytest.mark.slow
def test_multirun_refuses_in_process_ddp(tmp_path):
    proc = run_main(tmp_path, [*MULTIRUN, "devices=2", "strategy=ddp", "accelerator=cpu"], timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "in-process DDP inside a Hydra multirun (-m) is not supported" in proc.stderr
    assert not (tmp_path / "trained_models").exists()


@pytest.mark.slow
def test_multirun_runs_one_job_per_value(tmp_path):
    # Auto-resume does not compare method_kwargs: the second job would continue the first.
    args = [*MULTIRUN, "auto_resume.enabled=False", f"checkpoint.dir={tmp_path / 'tm'}"]
    proc = run_main(tmp_path, args, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "tm" / "mae").glob("*/args.json"))
    assert len(runs) == 2
    ratios = sorted(json.loads(p.read_text())["method_kwargs"]["mask_ratio"] for p in runs)
    assert ratios == [0.5, 0.75]
    assert all(list(p.parent.glob("*-ep=0.ckpt")) for p in runs)


@pytest.mark.slow
def test_multirun_with_auto_resume_keeps_trials_apart(tmp_path):
    args = [*MULTIRUN, "auto_resume.enabled=True", f"checkpoint.dir={tmp_path / 'tm'}"]
    proc = run_main(tmp_path, args, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "tm" / "mae").glob("*/args.json"))) == 2


PAPER_SWEEPS = sorted((REPO / "scripts" / "sweeps" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("sweep_file", PAPER_SWEEPS, ids=lambda p: p.name)
def test_paper_scale_sweeps_pass_the_dry_run_on_a_cpu(sweep_file):
    # the GPU recipes checked here with accelerator=cpu added to each point (not to the command)
    lines = []
    assert dry_run(sweep_file, echo=lines.append, extra=["accelerator=cpu", "precision=32"]) == 0, lines
    assert lines.count("  OK") == 3  # three seeds
    assert "accelerator=cpu" not in lines[0]


def test_paper_sweeps_cover_the_magma_table_on_both_datasets():
    names = {p.stem for p in PAPER_SWEEPS}
    for dataset in ("cifar100", "imagenet100"):
        for recipe in ("mae", "magma-mae", "u-mae", "mae-reg-uniformity", "tcr-mae"):
            assert f"{dataset}-{recipe}" in names


PAIRED_SWEEPS = sorted((REPO / "scripts" / "sweeps" / "paired").glob("*.yaml"))
PAIRED_ARMS = ("mae", "magma", "u-mae", "mu-mae")


@pytest.mark.parametrize("sweep_file", PAIRED_SWEEPS, ids=lambda p: p.name)
def test_paired_sweeps_pass_the_dry_run_on_a_cpu(sweep_file):
    lines = []
    assert dry_run(sweep_file, echo=lines.append, extra=["accelerator=cpu", "precision=32"]) == 0, lines
    assert lines.count("  OK") == 3


def paired_config(sweep_file: Path, seed: int) -> dict:
    """The validated config of one point of a paired sweep, without where and how it is kept."""
    sweep = load_sweep(sweep_file)
    config_path, config_name, overrides = fixed_arguments(sweep)
    # checked on the CPU, as the dry run does (the recipes name one GPU)
    check = [*overrides, f"seed={seed}", "accelerator=cpu", "precision=32"]
    raw = compose_config(resolve_config_dir(config_path), config_name, check)
    cfg = OmegaConf.to_container(parse_cfg(raw), resolve=True)
    return {k: v for k, v in cfg.items() if k not in ("name", "wandb", "checkpoint", "auto_resume")}


@pytest.mark.parametrize("dataset", ["cifar100", "imagenet100"])
def test_paired_arms_differ_only_in_the_regularizer(dataset):
    """Within one table the arms (MAGMA's MAE, MAGMA, U-MAE, MU-MAE) share everything but the
    regularizers' weights: the same recipe, batch, lr, schedule, epochs, seeds and kNN k 10."""
    configs = {
        arm: paired_config(REPO / "scripts" / "sweeps" / "paired" / f"{dataset}-{arm}.yaml", 0)
        for arm in PAIRED_ARMS
    }
    weights = {}
    for arm, cfg in configs.items():
        regularizers = cfg["method_kwargs"].pop("regularizers")
        cfg["derived"].pop("regularizers", None)
        cfg["derived"].pop("protocols", None)  # names the regularizers in words
        weights[arm] = {name: spec["scheduler"].get("weight") for name, spec in regularizers.items()}
        assert cfg["knn_eval"]["k"] == 10 and cfg["devices"] == [0] and cfg["optimizer"]["batch_size"] == 256
    first = configs["mae"]
    for arm in PAIRED_ARMS[1:]:
        assert configs[arm] == first, arm
    on = {arm: {name for name, weight in w.items() if weight} for arm, w in weights.items()}
    assert on == {
        "mae": set(),
        "magma": {"magma"},
        "u-mae": {"uniformity"},
        "mu-mae": {"magma", "uniformity"},
    }
