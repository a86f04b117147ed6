"""``main_pretrain.py`` runs for the launcher tests: the digits recipe ``mae.yaml`` shrunk to the
model of tests/methods/tiny.py through Hydra overrides, and readers for what a run leaves in its
folder."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from pathlib import Path

from tests.methods.tiny import tiny_cfg

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "main_pretrain.py"
# the per-step training metric: one row per optimizer step with log_every_n_steps=1
STEP_METRIC = "train_reconstruction_loss_step"


def tiny_overrides(checkpoint_dir: Path, *extra: str) -> list[str]:
    """``--config-name mae.yaml`` and the overrides that make it the tiny model of
    tests/methods/tiny.py on the digits, one process on the CPU, no wandb; ``extra`` last."""
    tiny = tiny_cfg(Path("."))
    args = ["--config-name", "mae.yaml"]
    args += [f"backbone.kwargs.{key}={value}" for key, value in tiny["backbone"]["kwargs"].items()]
    args += [
        f"method_kwargs.{key}={tiny['method_kwargs'][key]}"
        for key in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads")
    ]
    args += [
        f"optimizer.batch_size={tiny['optimizer']['batch_size']}",
        "data.num_workers=0",
        "accelerator=cpu",
        "++limit_val_batches=2",
        "log_every_n_steps=1",
        f"checkpoint.dir={checkpoint_dir}",
        "wandb.enabled=False",
    ]
    return [*args, *extra]


def main_command(args: list[str]) -> list[str]:
    return [sys.executable, str(MAIN), *args]


def write_job_script(path: Path, line: list[str], exec_: bool = False, srun: bool = False) -> Path:
    """A batch script running ``line`` (``srun`` before it, or ``exec`` so that the batch step is
    the Python process itself). The job inherits the submitting environment (sbatch's default),
    so the test's interpreter and PYTHONPATH carry over."""
    prefix = "exec " if exec_ else ""
    prefix += "srun " if srun else ""
    path.write_text(f"#!/bin/bash\n{prefix}{shlex.join(line)}\n")
    path.chmod(0o755)
    return path


def run_dirs(checkpoint_dir: Path, method: str = "mae") -> list[Path]:
    root = checkpoint_dir / method
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def args_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "args.json").read_text())


def step_rows(run_dir: Path) -> list[dict[str, str]]:
    """The training-step rows of every csv log of the run (all ``csv/version_*``), in file order."""
    rows = []
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        try:
            with open(path, newline="") as f:
                rows += [row for row in csv.DictReader(f) if row.get(STEP_METRIC)]
        except (OSError, csv.Error):
            continue  # being rewritten; the next poll reads it
    return rows


def logged_steps(run_dir: Path) -> list[int]:
    return [int(row["step"]) for row in step_rows(run_dir)]
