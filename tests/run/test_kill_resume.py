"""A real run killed with SIGKILL in the middle of its second epoch, then the same command again:
auto-resume continues from the last complete checkpoint and ends with exactly the weights of an
uninterrupted run with the same seed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _command(checkpoint_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO / "main_pretrain.py"),
        "--config-name",
        "mae-reg-uniformity.yaml",
        "max_epochs=2",
        "++limit_train_batches=30",
        "++limit_val_batches=1",
        "optimizer.batch_size=32",
        "++backbone.kwargs.embed_dim=32",
        "++backbone.kwargs.num_heads=2",
        "method_kwargs.decoder_embed_dim=16",
        "method_kwargs.decoder_depth=1",
        "method_kwargs.decoder_num_heads=2",
        "method_kwargs.reg_scheduler.warmup_epochs=1",
        "scheduler.warmup_epochs=1",
        "wandb.enabled=False",
        "diagnostics.validate_before_training=False",
        "++enable_progress_bar=False",
        f"checkpoint.dir={checkpoint_dir}",
    ]


def _final_weights(checkpoint_dir: Path) -> dict:
    (run_dir,) = (checkpoint_dir / "mae-reg").iterdir()
    ckpts = sorted(run_dir.glob("*-ep=*.ckpt"))
    assert [p.name.rsplit("-", 1)[-1] for p in ckpts] == ["ep=1.ckpt"]
    return torch.load(ckpts[0], weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    subprocess.run(
        _command(tmp_path / "a"), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600
    )
    expected = _final_weights(tmp_path / "a")

    proc = subprocess.Popen(
        _command(tmp_path / "b"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    first = None
    while time.time() < deadline and first is None:
        first = next(iter((tmp_path / "b").glob("mae-reg/*/*-ep=0.ckpt")), None)
        time.sleep(0.02)
    assert first is not None, "the first epoch's checkpoint never appeared"
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = first.parent
    assert not list(run_dir.glob("*-ep=1.ckpt")), "the run finished before it could be killed"

    # the same command again: auto-resume (on in the recipe) picks up epoch 0's checkpoint
    result = subprocess.run(_command(tmp_path / "b"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "auto-resume: continuing run" in result.stdout
    assert [p.parent for p in (tmp_path / "b").glob("mae-reg/*/args.json")] == [run_dir]
    resumed = _final_weights(tmp_path / "b")
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=f"{key} differs after resume")
