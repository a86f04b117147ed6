"""In-process: a real signal, raised by the process itself inside a training step, stops the run
at the next batch with the exact state saved and the signal's exit code; the same config continues
it mid-epoch and ends with the weights of an uninterrupted run, bit for bit (fast counterpart of
tests/run/test_preemption.py)."""

import csv
import os
import signal

import pytest
import torch
from omegaconf import OmegaConf

import solo_ext.regularizers.uniformity as uniformity_module
from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.errors import Interrupted
from solo_ext.utils.runfolder import epoch_checkpoints, run_id_of, states_in
from tests.methods.tiny import tiny_cfg

STEPS = 4


def cfg_of(root, **top):
    cfg = tiny_cfg(
        root,
        method_kwargs={"regularizers": {"uniformity": {"weight": 0.1}}},
        max_epochs=2,
        limit_train_batches=STEPS,
        limit_val_batches=1,
        knn_eval={"enabled": False},
        **top,
    )
    cfg["diagnostics"] = {"validate_before_training": False}
    return cfg


def signal_at_call(monkeypatch, call: int, signum: int) -> None:
    """The process signals itself in the middle of the ``call``-th training step."""
    real = uniformity_module.uniformity_loss
    calls = {"n": 0}

    def loss(z):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return real(z)

    monkeypatch.setattr(uniformity_module, "uniformity_loss", loss)


def weights(run_dir):
    return torch.load(epoch_checkpoints(run_dir)[-1], weights_only=True)["state_dict"]


def steps_logged(run_dir) -> list[int]:
    rows = [r for p in sorted(run_dir.glob("csv/version_*/metrics.csv")) for r in csv.DictReader(open(p))]
    return sorted(int(r["step"]) for r in rows if r.get("train_reconstruction_loss_step"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_saves_the_exact_state_and_exits_with_its_code(tmp_path, monkeypatch, signum):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    signal_at_call(monkeypatch, STEPS + 2, signum)  # in epoch 1's second step (global step 5)
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as err:
        run_pretrain(OmegaConf.create(cfg_of(tmp_path, run_name="sig")))
    assert err.value.exit_code == 128 + signum
    run_dir = tmp_path / "trained_models" / "mae-reg" / run_id_of("name:sig")
    # saved at the end of the step the signal arrived in; the epoch-0 checkpoint it supersedes is gone
    assert [p.name.split("-", 2)[-1] for p in states_in(run_dir)] == ["ep=1-step=6.ckpt"]
    assert str(err.value).startswith(
        f"{signal.Signals(signum).name} at global step 6: the run's state is saved"
    )
    assert "requeued" not in str(err.value)
    assert signal.getsignal(signum) is before  # handlers given back
    assert not (run_dir / ".lock").exists()


def test_resumed_mid_epoch_ends_bit_identical(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_pretrain(OmegaConf.create(cfg_of(tmp_path / "a", enable_progress_bar=True)))
    # no terminal here: progress is plain lines (one per logging step), not Lightning's bar
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert len(lines) == 2 * STEPS and lines[0].startswith("epoch 1/2 batch 1/4 (global step 1) loss ")
    assert lines[-1].startswith("epoch 2/2 batch 4/4 (global step 8) loss ")
    (plain,) = (tmp_path / "a" / "trained_models" / "mae-reg").iterdir()
    expected = weights(plain)

    cfg = cfg_of(tmp_path / "b", run_name="resumed")
    with monkeypatch.context() as m:
        signal_at_call(m, STEPS + 2, signal.SIGTERM)
        with pytest.raises(Interrupted):
            run_pretrain(OmegaConf.create(cfg))
    capsys.readouterr()
    run_pretrain(OmegaConf.create(cfg))
    # six steps done: the epoch's batches 0 and 1; it goes on with batch 2
    assert "resume: epoch 1 continues at batch 2 (global step 6)" in capsys.readouterr().out
    run_dir = tmp_path / "b" / "trained_models" / "mae-reg" / run_id_of("name:resumed")
    got = weights(run_dir)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert steps_logged(run_dir) == list(range(2 * STEPS))  # each step logged once
