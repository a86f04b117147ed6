"""The run folder's writer, checkpoint choice, lock and job identity, against real processes and
real files (a writer killed mid-write, a lock held by another live process)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from solo_ext.utils import runfolder
from solo_ext.utils.runfolder import (
    RunFolderError,
    RunLock,
    holder_is_dead,
    job_identity,
    newest_readable_state,
    remove_stale_temporaries,
    run_id_of,
    states_in,
    write_atomic,
    write_json_atomic,
)

SLOW_WRITER = """
import sys, time
from pathlib import Path
from solo_ext.utils.runfolder import write_atomic
def write(tmp):
    with open(tmp, "wb") as f:
        for _ in range(400):
            f.write(b"x" * 4096)
            f.flush()
            time.sleep(0.01)
print("writing", flush=True)
write_atomic(Path(sys.argv[1]), write)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "state.ckpt"
    target.write_bytes(b"old and complete")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.5)  # in the middle of its 4 s of writing
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert target.read_bytes() == b"old and complete"
    [left] = [p for p in tmp_path.iterdir() if p != target]  # its own temporary, never the target
    assert 0 < left.stat().st_size < 400 * 4096
    assert remove_stale_temporaries(tmp_path) == [left]
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_mode_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_json_atomic(tmp_path / "args.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_a_failed_write_leaves_nothing(tmp_path):
    def full_disk(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(tmp_path / "x.ckpt", full_disk)
    assert list(tmp_path.iterdir()) == []


def save_state(path, value):
    torch.save({"value": torch.tensor(value)}, path)


def test_an_unreadable_newest_checkpoint_is_named_and_the_one_before_used(tmp_path):
    for name, value in [("r-ab-ep=0.ckpt", 0), ("r-ab-ep=1-step=7.ckpt", 1), ("r-ab-ep=1.ckpt", 2)]:
        save_state(tmp_path / name, value)
    newest = tmp_path / "r-ab-ep=1.ckpt"
    assert states_in(tmp_path)[-1] == newest
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn mid-write
    warnings = []
    chosen = newest_readable_state(tmp_path, warnings.append)
    assert chosen == tmp_path / "r-ab-ep=1-step=7.ckpt"
    [line] = warnings
    assert str(newest) in line and "unreadable" in line
    # a flipped byte inside a tensor's data is caught by its member's CRC
    with zipfile.ZipFile(chosen) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    data = bytearray(chosen.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little")
    start += int.from_bytes(data[header + 28 : header + 30], "little")
    data[start] ^= 0xFF
    chosen.write_bytes(bytes(data))
    assert newest_readable_state(tmp_path, warnings.append) == tmp_path / "r-ab-ep=0.ckpt"


def test_only_torn_checkpoints_is_one_line(tmp_path):
    (tmp_path / "r-ab-ep=0.ckpt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(RunFolderError, match=r"^no readable checkpoint in .*: all 1 are torn or corrupt$"):
        newest_readable_state(tmp_path, print)
    assert (
        newest_readable_state(tmp_path / "nothing", print) is None
        if (tmp_path / "nothing").mkdir() is None
        else 0
    )


HOLDER = """
import sys, time
from pathlib import Path
from solo_ext.utils.runfolder import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_live_holder_is_refused_and_a_dead_one_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=rf"is in use by pid {proc.pid} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    lock = RunLock(tmp_path)
    lock.acquire()  # its holder is dead: taken over
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not tmp_path.exists()  # the lock was all it held: no empty run folder is left


def test_release_keeps_a_folder_with_the_runs_files(tmp_path):
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    (tmp_path / "run" / "args.json").write_text("{}")
    lock.release()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["args.json"]


def test_dead_holder_rules():
    me = {"host": "a", "pid": 10, "slurm_job": "7", "slurm_restart": 1}
    # an earlier incarnation of this SLURM job, wherever it ran
    assert holder_is_dead({"host": "b", "pid": 3, "slurm_job": "7", "slurm_restart": 0}, 0.0, me)
    # another host: only a stale heartbeat tells
    assert not holder_is_dead({"host": "b", "pid": 3}, runfolder.STALE_S - 1, me)
    assert holder_is_dead({"host": "b", "pid": 3}, runfolder.STALE_S + 1, me)


def test_job_identity_and_its_run_id():
    assert job_identity("my-run", {}) == "name:my-run"
    slurm = {"SLURM_JOB_ID": "41", "SLURM_CLUSTER_NAME": "c"}
    assert job_identity(None, slurm) == "slurm:c:41:"
    array = {"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    assert job_identity(None, array) == "slurm::40:3"
    # torchrun's rendezvous does not outlive its launch: no identity (auto-resume finds the run)
    torchrun = {"TORCHELASTIC_RUN_ID": "r1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "9"}
    assert job_identity(None, torchrun) is None
    assert job_identity(None, {}) is None
    ids = {run_id_of(x) for x in ("name:a", "name:b", "slurm:c:41:")}
    assert len(ids) == 3 and all(len(i) == 8 and i.isalnum() and i.islower() or i.isdigit() for i in ids)
    assert run_id_of("name:a") == run_id_of("name:a")


def test_run_ids_of_identities_never_change():
    # a requeued job, a new release: the same identity must give the same folder forever
    assert run_id_of("name:a") == "e9ec5sa8"
    assert run_id_of("slurm:c:41:") == "kotjqzqi"


def test_job_identity_reads_the_environment(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert job_identity(None) is None
    monkeypatch.setenv("SLURM_JOB_ID", "88")
    assert job_identity(None).startswith("slurm:") and job_identity(None).endswith(":88:")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "80")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert job_identity(None).endswith(":80:2")
    assert job_identity("mine") == "name:mine"  # run_name first


def test_states_are_ordered_by_when_they_were_written(tmp_path):
    names = ["r-ab-ep=1.ckpt", "r-ab-ep=1-step=9.ckpt", "r-ab-ep=0.ckpt", "r-ab-ep=1-step=10.ckpt"]
    for name in [*names, "r-ab-ep=2.ckpt.tmp-12-abcdef", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in states_in(tmp_path)] == [
        "r-ab-ep=0.ckpt",
        "r-ab-ep=1-step=9.ckpt",
        "r-ab-ep=1-step=10.ckpt",
        "r-ab-ep=1.ckpt",
    ]
    assert [p.name for p in runfolder.epoch_checkpoints(tmp_path)] == ["r-ab-ep=0.ckpt", "r-ab-ep=1.ckpt"]
    assert runfolder.unreadable_reason(tmp_path / "r-ab-ep=0.ckpt").startswith("BadZipFile: ")


def write_lock(folder, holder: dict, age_s: float = 0.0):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    path.write_text(json.dumps(holder) if holder is not None else "not json")
    when = time.time() - age_s
    os.utime(path, (when, when))


def test_the_lock_names_its_holder_with_the_usual_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    old = os.umask(0o022)
    try:
        lock = RunLock(tmp_path / "a" / "b" / "run")  # parents made as needed
        lock.acquire()
    finally:
        os.umask(old)
    path = tmp_path / "a" / "b" / "run" / ".lock"
    holder = json.loads(path.read_text())
    assert {k: holder[k] for k in ("host", "pid", "slurm_job", "slurm_restart")} == {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": "77",
        "slurm_restart": 2,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", holder["started"])
    assert path.stat().st_mode & 0o777 == 0o644
    lock.release()


def test_an_earlier_incarnation_of_this_slurm_job_is_taken_over(tmp_path, monkeypatch):
    # the requeued job may land on the same node while a pid of the old one is reused: the
    # restart count decides, not the pid
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    live = {"host": socket.gethostname(), "pid": os.getppid(), "slurm_job": "77"}
    write_lock(tmp_path, {**live, "slurm_restart": 0})
    RunLock(tmp_path).acquire()
    write_lock(tmp_path, {**live, "slurm_restart": 1})  # the same incarnation: a live process
    with pytest.raises(RunFolderError, match=rf"in use by pid {os.getppid()} on .* \(SLURM job 77\) since"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("holder", [{"host": "elsewhere", "pid": 1}, None], ids=["other-host", "unreadable"])
def test_a_lock_from_elsewhere_is_judged_by_its_heartbeat(tmp_path, holder):
    write_lock(tmp_path, holder, age_s=runfolder.STALE_S - 30)
    with pytest.raises(RunFolderError, match="is in use by pid"):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, holder, age_s=runfolder.STALE_S + 30)
    lock = RunLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match=r"^cannot lock run folder .*file/run: "):
        RunLock(tmp_path / "file" / "run").acquire()


def test_holder_rules_at_their_edges():
    me = {"host": "a", "pid": 10, "slurm_job": None, "slurm_restart": 0}
    assert holder_is_dead({"host": "a", "pid": 10}, 0.0, me)  # our own pid: left by this process
    assert not holder_is_dead({"host": "b", "pid": 3}, runfolder.STALE_S, me)  # exactly stale: not yet
    # on this host without a usable pid: the heartbeat decides, as for another host
    assert not holder_is_dead({"host": "a"}, runfolder.STALE_S - 1, me)
    assert holder_is_dead({"host": "a", "pid": "x"}, runfolder.STALE_S + 1, me)
    # no SLURM job on either side: the restart rule does not apply
    assert not holder_is_dead({"host": "b", "pid": 3, "slurm_job": None, "slurm_restart": -1}, 0.0, me)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"a": 1}', None),
        ('{"a": ', "is not valid JSON (Expecting value: line 1 column 7 (char 6))"),
        ("[1, 2]", "holds a JSON list, not an object"),
        (None, "cannot be read (No such file or directory)"),
        (b"\xff\xfe{}", "cannot be read ("),
    ],
)
def test_a_runs_json_file_reads_as_an_object_or_says_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "args.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    data, found = runfolder.read_json_object(path)
    if problem is None:
        assert (data, found) == ({"a": 1}, None)
    else:
        assert data is None and found.startswith(problem)


def test_only_the_run_folder_names_a_runs_json_files():
    """args.json and results.json are named (as string values in code, not in prose) by
    utils/runfolder.py alone; every other module reaches them through its names and reader."""
    import ast
    from pathlib import Path

    package = Path(runfolder.__file__).parents[1]
    named = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in ("args.json", "results.json")
                and id(node) not in docstrings
            ):
                named.append((str(path.relative_to(package)), node.value))
    assert named == [("utils/runfolder.py", "args.json"), ("utils/runfolder.py", "results.json")]
