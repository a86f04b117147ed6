"""``main_pretrain.py`` as a user runs it: 2 CPU processes (gloo DDP launched by Lightning), wandb
offline, one epoch; then the same command continues the run for a second epoch.

Every process re-runs the script; only rank 0 may create the run directory, args.json, the
checkpoint and the wandb run, and all processes must agree on the run id. Each invocation takes
tens of seconds (two interpreters importing torch, the wandb service), hence ``slow``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 420


def run_main(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SOLO_EXT_"))}
    env.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(cwd / "wandb-home"),
        WANDB_CONFIG_DIR=str(cwd / "wandb-home"),
        WANDB_CACHE_DIR=str(cwd / "wandb-home"),
        WANDB_DATA_DIR=str(cwd / "wandb-home"),
        WANDB_SILENT="true",
    )
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a parent test runner under DDP must not make the script a child
    proc = subprocess.run(
        [sys.executable, str(REPO / "main_pretrain.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_two_process_run_with_wandb_offline_then_resume(tmp_path):
    method_dir = tmp_path / "tm" / "mae-reg"
    base = [
        "--config-name",
        "mae-reg-uniformity.yaml",
        "devices=2",
        "strategy=ddp",
        "accelerator=cpu",
        "++limit_train_batches=3",
        "++limit_val_batches=2",
        "optimizer.batch_size=16",
        f"checkpoint.dir={tmp_path / 'tm'}",
        "wandb.enabled=True",
        "wandb.offline=True",
        "scheduler.warmup_epochs=0",  # so the first step runs at the full (scaled) lr
        "log_every_n_steps=1",
        # A smaller ViT that keeps MAGMA's block 4 of 6.
        "++backbone.kwargs.embed_dim=32",
        "++backbone.kwargs.num_heads=2",
        "++backbone.kwargs.depth=6",
        "method_kwargs.decoder_embed_dim=16",
        "method_kwargs.decoder_num_heads=2",
        "method_kwargs.decoder_depth=1",
    ]

    run_main(tmp_path, [*base, "max_epochs=1"])
    run_dirs = [p for p in method_dir.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    run_id = run_dir.name
    assert len(list(tmp_path.rglob("args.json"))) == 1
    args = json.loads((run_dir / "args.json").read_text())
    assert args["run_id"] == args["wandb_run_id"] == run_id
    derived = args["derived"]
    assert derived["world_size"] == 2
    assert derived["global_batch_size"] == 32
    assert derived["lr"] == pytest.approx(args["optimizer"]["lr"] * 32 / 256)
    first_runs = offline_runs(run_dir)
    assert len(first_runs) == 1, first_runs
    assert first_runs[0].name.endswith(f"-{run_id}")  # wandb's id is our run id
    assert (first_runs[0] / f"run-{run_id}.wandb").is_file()
    ckpt0 = run_dir / f"mae-reg-uniformity-digits-{run_id}-ep=0.ckpt"
    assert ckpt0.is_file()
    metrics = list(csv.DictReader(open(run_dir / "csv" / "version_0" / "metrics.csv")))
    acc = [float(row["val_acc1"]) for row in metrics if row.get("val_acc1")]
    assert acc and all(0 <= a <= 100 for a in acc)
    lr_keys = [key for key in metrics[0] if key.startswith("lr-") and "backbone" in key]
    lrs = [float(row[key]) for row in metrics for key in lr_keys if row[key]]
    assert lrs and max(lrs) == pytest.approx(derived["lr"], rel=1e-6)  # what the optimizer ran at

    # Auto-resume only continues a run whose max_epochs matches (checkpointer.SHOULD_MATCH), so a
    # longer schedule is asked for with the checkpoint; the run keeps its id, folder and wandb id.
    longer = [*base, "max_epochs=2", "auto_resume.enabled=True"]
    # Quoted: Hydra's override grammar reads the '=' of "ep=0" as a second assignment otherwise.
    run_main(tmp_path, [*longer, f"++resume_from_checkpoint='{ckpt0}'"])
    assert [p for p in method_dir.iterdir() if p.is_dir()] == [run_dir]
    assert (run_dir / f"mae-reg-uniformity-digits-{run_id}-ep=1.ckpt").is_file()
    assert not ckpt0.exists()  # keep_prev=False: the older checkpoint goes once the new one is written
    resumed = offline_runs(run_dir)
    assert len(resumed) == 2 and all(p.name.endswith(f"-{run_id}") for p in resumed)

    # The same command again, without the checkpoint: auto-resume finds this run by its args.json.
    proc = run_main(tmp_path, longer)
    assert f"auto-resume: continuing run {run_id}" in proc.stdout
    assert [p for p in method_dir.iterdir() if p.is_dir()] == [run_dir]
    assert len(list(tmp_path.rglob("args.json"))) == 1
    assert all(p.name.endswith(f"-{run_id}") for p in offline_runs(run_dir))
