"""Signals, exit codes and exact mid-epoch resume, on real ``main_pretrain.py`` processes.

A run stopped by SIGTERM in the middle of an epoch saves its exact state into its own folder and
exits 143; the same command continues it (found by its ``run_name``) and ends with the weights of
an uninterrupted run, bit for bit (``data.num_workers=0``), no step trained or logged twice."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
STEPS = 12  # per epoch


def command(checkpoint_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "main_pretrain.py"),
        "--config-name",
        "mae-reg-uniformity.yaml",
        "max_epochs=2",
        f"++limit_train_batches={STEPS}",
        "++limit_val_batches=1",
        "++log_every_n_steps=1",
        "optimizer.batch_size=16",
        "data.num_workers=0",
        "++backbone.kwargs.embed_dim=32",
        "++backbone.kwargs.num_heads=2",
        "method_kwargs.decoder_embed_dim=16",
        "method_kwargs.decoder_depth=1",
        "method_kwargs.decoder_num_heads=2",
        "method_kwargs.reg_scheduler.warmup_epochs=1",
        "scheduler.warmup_epochs=1",
        "wandb.enabled=False",
        "diagnostics.validate_before_training=False",
        f"checkpoint.dir={checkpoint_dir}",
        *extra,
    ]


ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def stop_at(cmd: list[str], cwd: Path, epoch: int, batch: int, signum: int) -> subprocess.CompletedProcess:
    """Start ``cmd``, send ``signum`` once it prints that it finished ``batch`` of ``epoch``."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    deadline = time.time() + 600
    for line in proc.stdout:
        out.append(line)
        if line.startswith(f"epoch {epoch}/2 batch {batch}/"):
            proc.send_signal(signum)
            break
        assert time.time() < deadline
    rest, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out) + rest, err)


def final_state(checkpoint_dir: Path) -> dict:
    (run_dir,) = (checkpoint_dir / "mae-reg").iterdir()
    (ckpt,) = run_dir.glob("*-ep=1.ckpt")
    return torch.load(ckpt, weights_only=True)["state_dict"]


def logged_train_steps(checkpoint_dir: Path) -> list[int]:
    (run_dir,) = (checkpoint_dir / "mae-reg").iterdir()
    rows = [row for p in sorted(run_dir.glob("csv/version_*/metrics.csv")) for row in csv.DictReader(open(p))]
    return sorted(int(row["step"]) for row in rows if row.get("train_reconstruction_loss_step"))


@pytest.mark.slow
def test_sigterm_mid_epoch_then_the_same_command_is_bit_identical(tmp_path):
    done = subprocess.run(command(tmp_path / "a"), cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = final_state(tmp_path / "a")

    cmd = command(tmp_path / "b", "++run_name=preempted")
    stopped = stop_at(cmd, tmp_path, epoch=2, batch=5, signum=signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    [line] = [x for x in stopped.stderr.splitlines() if x.startswith("stopped: ")]
    assert line.startswith("stopped: SIGTERM at global step ") and "-step=" in line
    assert "Traceback" not in stopped.stderr

    resumed = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: name job continues run" in resumed.stdout
    assert "resume: epoch 1 continues at batch" in resumed.stdout
    weights = final_state(tmp_path / "b")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    steps = logged_train_steps(tmp_path / "b")
    assert len(steps) == len(set(steps)) == 2 * STEPS  # every step once, none twice
    assert [p.name for p in (tmp_path / "b" / "mae-reg").iterdir()] == [clean_run_dir(tmp_path / "b")]
    assert list(tmp_path.glob("*.ckpt")) == []  # nothing in the launch directory


def clean_run_dir(checkpoint_dir: Path) -> str:
    (run_dir,) = (checkpoint_dir / "mae-reg").iterdir()
    names = {p.name for p in run_dir.iterdir()}
    assert ".lock" not in names and not [n for n in names if ".tmp" in n]
    return run_dir.name


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGINT])
def test_signals_save_and_exit_with_128_plus_their_number(tmp_path, signum):
    stopped = stop_at(command(tmp_path / "c", "++run_name=x"), tmp_path, epoch=1, batch=3, signum=signum)
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    (run_dir,) = (tmp_path / "c" / "mae-reg").iterdir()
    assert len(list(run_dir.glob("*-ep=0-step=*.ckpt"))) == 1
    assert "requeued" not in stopped.stderr  # not a SLURM job: nothing to requeue


def test_divergence_exits_3_with_one_line(tmp_path):
    cmd = command(tmp_path / "d", "optimizer.lr=1e9", "max_epochs=1")
    result = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: non-finite loss at global step ")
    (run_dir,) = (tmp_path / "d" / "mae-reg").iterdir()
    assert list(run_dir.glob("*.ckpt")) == []
