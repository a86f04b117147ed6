"""How a run is found and continued (one rule: explicit checkpoint, job identity, auto-resume by
config and data), and the faults around it: torn checkpoints, keep_prev, a missing args.json, a
folder another live process trains in, another data set, a full disk."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.runfolder import RunFolderError, epoch_checkpoints, run_id_of, states_in
from tests.methods.tiny import tiny_cfg


def cfg_of(tmp_path, **top):
    base = {"max_epochs": 2, "limit_train_batches": 2, "auto_resume": {"enabled": True}}
    return tiny_cfg(tmp_path, method="mae", knn_eval={"enabled": False}, **{**base, **top})


def run_dirs(tmp_path) -> list[Path]:
    return sorted((tmp_path / "trained_models" / "mae").iterdir())


@pytest.mark.parametrize("keep_prev", [True, False])
def test_keep_prev_both_ways(tmp_path, monkeypatch, keep_prev):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path, max_epochs=3)
    cfg["checkpoint"]["keep_prev"] = keep_prev
    run_pretrain(OmegaConf.create(cfg))
    (run_dir,) = run_dirs(tmp_path)
    names = [p.name.rsplit("-", 1)[-1] for p in epoch_checkpoints(run_dir)]
    assert names == (["ep=0.ckpt", "ep=1.ckpt", "ep=2.ckpt"] if keep_prev else ["ep=2.ckpt"])


def test_a_torn_newest_checkpoint_is_named_and_the_previous_one_resumed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path)
    cfg["checkpoint"]["keep_prev"] = True
    run_pretrain(OmegaConf.create(cfg))
    (run_dir,) = run_dirs(tmp_path)
    first, newest = epoch_checkpoints(run_dir)
    newest.write_bytes(newest.read_bytes()[:1000])  # a crash or a full disk mid-write
    capsys.readouterr()
    trainer = run_pretrain(OmegaConf.create(cfg))
    out = capsys.readouterr().out
    assert f"WARNING: checkpoint {newest} is unreadable" in out
    assert f"auto-resume: continuing run {run_dir.name} from {first}" in out
    assert trainer.global_step == 4  # the second epoch trained again, from the first's end
    assert torch.load(newest, weights_only=True)["epoch"] == 1  # rewritten whole


def test_only_a_torn_checkpoint_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path)
    run_pretrain(OmegaConf.create(cfg))
    (run_dir,) = run_dirs(tmp_path)
    (only,) = epoch_checkpoints(run_dir)
    only.write_bytes(only.read_bytes()[:1000])
    with pytest.raises(
        RunFolderError, match=r"no readable checkpoint in .*: all 1 are torn or corrupt"
    ) as err:
        run_pretrain(OmegaConf.create(cfg))
    assert err.value.exit_code == 2


def test_auto_resume_matches_the_data_and_never_rewrites_another_runs_args(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_pretrain(OmegaConf.create(cfg_of(tmp_path)))
    (first,) = run_dirs(tmp_path)
    args_before = (first / "args.json").read_bytes()
    other = cfg_of(tmp_path)
    other["data"]["fraction"] = 0.5
    run_pretrain(OmegaConf.create(other))
    assert len(run_dirs(tmp_path)) == 2  # a new run for other data
    assert (first / "args.json").read_bytes() == args_before


def test_run_name_continues_its_run_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path, run_name="mine", auto_resume={"enabled": False})
    run_pretrain(OmegaConf.create({**cfg, "max_epochs": 1}))
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name == run_id_of("name:mine")
    assert json.loads((run_dir / "args.json").read_text())["job_identity"] == "name:mine"
    # the same settings: continued (max_epochs is compared, so set it equal and resume)
    capsys.readouterr()
    run_pretrain(OmegaConf.create({**cfg, "max_epochs": 1}))
    assert "resume: name job continues run" in capsys.readouterr().out
    with pytest.raises(RunFolderError, match=r"run_name='mine' names run .* trained with seed=5 where"):
        run_pretrain(OmegaConf.create({**cfg, "max_epochs": 1, "seed": 6}))


def test_checkpoints_without_args_json_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path, run_name="mine")
    run_pretrain(OmegaConf.create(cfg))
    (run_dir,) = run_dirs(tmp_path)
    (run_dir / "args.json").unlink()
    with pytest.raises(RunFolderError, match="holds checkpoints but no readable args.json"):
        run_pretrain(OmegaConf.create(cfg))
    assert not (run_dir / "args.json").exists()


HOLDER = """
import sys, time
from pathlib import Path
from solo_ext.utils.runfolder import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_live_process_on_the_same_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path, run_name="busy")
    run_dir = tmp_path / "trained_models" / "mae" / run_id_of("name:busy")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=rf"run folder {run_dir} is in use by pid {proc.pid} on "):
            run_pretrain(OmegaConf.create(cfg))
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing of ours written
    finally:
        proc.kill()
        proc.wait(timeout=10)
    run_pretrain(OmegaConf.create(cfg))  # the holder is dead: its lock is taken over
    assert not (run_dir / ".lock").exists()  # released at the end


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import lightning.fabric.plugins.io.torch_io as torch_io

    monkeypatch.chdir(tmp_path)
    cfg = cfg_of(tmp_path)
    cfg["checkpoint"]["keep_prev"] = False
    run_pretrain(OmegaConf.create({**cfg, "max_epochs": 1}))
    (run_dir,) = run_dirs(tmp_path)
    (previous,) = states_in(run_dir)
    before = previous.read_bytes()
    real_save = torch_io._atomic_save

    def disk_full(checkpoint, path):
        real_save(checkpoint, path)
        Path(path).write_bytes(Path(path).read_bytes()[:500])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", disk_full)
    with pytest.raises(
        RunFolderError, match=r"cannot write checkpoint .*No space left on device; the previous"
    ):
        run_pretrain(OmegaConf.create({**cfg, "resume_from_checkpoint": str(previous)}))
    assert states_in(run_dir) == [previous] and previous.read_bytes() == before
    assert not [p for p in run_dir.iterdir() if "tmp" in p.name]


def test_a_checkpoint_of_another_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_pretrain(OmegaConf.create({**cfg_of(tmp_path), "max_epochs": 1}))
    (run_dir,) = run_dirs(tmp_path)
    (ckpt,) = states_in(run_dir)
    other = cfg_of(tmp_path / "other", resume_from_checkpoint=str(ckpt))
    other["backbone"]["kwargs"]["embed_dim"] = 64
    with pytest.raises(RunFolderError, match=r"is of another model \(\d+ shape\(s\) differ"):
        run_pretrain(OmegaConf.create(other))
