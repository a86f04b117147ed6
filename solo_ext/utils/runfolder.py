"""A run's folder, ``<checkpoint.dir>/<method>/<run id>/``: how its files are written, which of its
checkpoints is the one to resume, who may train in it, and which job it belongs to.

- **Atomic writes**: every file goes to a temporary name of its own in the same folder (the writer's
  pid and a random suffix, so two writers never share one), is flushed and ``fsync``-ed, given the
  permissions the umask allows, renamed over its final name, and the folder is ``fsync``-ed so the
  rename survives a crash. A kill at any moment leaves the old file or the new one, never a torn one.
- **Checkpoints**: ``<name>-<run id>-ep=<E>.ckpt`` at an epoch's end (the layout tools read) and
  ``<name>-<run id>-ep=<E>-step=<S>.ckpt`` in the middle of epoch E (periodic or on a signal). The
  newest one that reads as a complete zip archive (what ``torch.save`` writes) is the one resumed;
  an unreadable newer one is named in a warning and passed over.
- **The lock**: ``.lock`` names the process that trains in the folder (host, pid, SLURM job and
  restart count, start time) and is touched every :data:`HEARTBEAT_S` seconds. A second live
  process is refused; a lock whose holder is dead (its pid is gone on this host, it is an earlier
  incarnation of the same SLURM job, or its heartbeat is older than :data:`STALE_S`, e.g. on
  another node over a network file system) is taken over.
- **Its JSON files**: ``args.json`` (the run's validated config and bookkeeping) and
  ``results.json`` (what it reached, and what later tools added), named by :data:`ARGS_FILE` and
  :data:`RESULTS_FILE` and read by :func:`read_json_object` alone, whoever reads them.
- **The job's identity**: ``run_name`` when the user sets it, else the SLURM job (array job and
  task) on its cluster; the run id of an identity is a fixed function of it, so a requeued job,
  and every task of an ``srun``, finds the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import string
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solo_ext.utils.errors import UserError

HEARTBEAT_S = 30.0
STALE_S = 120.0
LOCK_NAME = ".lock"
ARGS_FILE = "args.json"
RESULTS_FILE = "results.json"
CKPT_STATE = re.compile(r"-ep=(\d+)(?:-step=(\d+))?\.ckpt$")
_TMP_MARK = ".tmp-"


class RunFolderError(UserError):
    """A run folder cannot be used: locked by a live process, no readable checkpoint, no args.json."""


# ----------------------------------------------------------------------------- atomic writes
def umask_mode(kind: str = "file") -> int:
    """The mode a plain ``open``/``mkdir`` would give under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if kind == "dir" else 0o666) & ~mask


def temporary_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other writer uses (pid and a random suffix)."""
    return path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Finish an atomic write: fsync ``tmp``, give it the umask's mode, rename it to ``path``, fsync
    the folder."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, umask_mode())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through ``write(tmp)`` (which creates the temporary file), atomically; the
    temporary file is removed if ``write`` fails."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=4, sort_keys=True, default=lambda _: "<not serializable>")
    return write_text_atomic(path, text)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files of our own writers left in ``folder`` by a crash or a full disk (call while
    holding the folder's lock, so no live writer owns them)."""
    stale = [p for p in folder.iterdir() if _TMP_MARK in p.name or p.name.endswith(".ckpt.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# ----------------------------------------------------------------------------- checkpoints
def state_order(path: Path) -> tuple[int, int, int] | None:
    """Sort key of a checkpoint by when it was written: epoch, then mid-epoch states (by step)
    before the epoch's end; None for other files."""
    match = CKPT_STATE.search(path.name)
    if match is None:  # our temporaries end in .tmp-<pid>-<hex>, never in .ckpt
        return None
    epoch, step = match.groups()
    return (int(epoch), 0, int(step)) if step is not None else (int(epoch), 1, 0)


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """The epoch-end checkpoints of a run, oldest first."""
    found = [(key, p) for p in Path(run_dir).glob("*.ckpt") if (key := state_order(p)) and key[1] == 1]
    return [p for _, p in sorted(found)]


def states_in(run_dir: Path) -> list[Path]:
    """Every checkpoint of a run (epoch ends and mid-epoch states), oldest first."""
    found = [(key, p) for p in Path(run_dir).glob("*.ckpt") if (key := state_order(p)) is not None]
    return [p for _, p in sorted(found)]


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (``torch.save``'s zip archive, every member's CRC
    checked; nothing is unpickled), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None if bad is None else f"member {bad} is corrupt"


def newest_readable_state(run_dir: Path, warn: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint of ``run_dir`` that is complete; each unreadable newer one is named in
    one warning line. None if the run has no checkpoint; RunFolderError if it has only torn ones."""
    states = states_in(run_dir)
    for path in reversed(states):
        reason = unreadable_reason(path)
        if reason is None:
            return path
        warn(f"WARNING: checkpoint {path} is unreadable ({reason}); trying the one before it")
    if states:
        raise RunFolderError(f"no readable checkpoint in {run_dir}: all {len(states)} are torn or corrupt")
    return None


# ----------------------------------------------------------------------------- identity
def new_run_id(parent: Path) -> str:
    """8 lowercase letters and digits (a valid wandb run id), unused under ``parent``."""
    alphabet = string.ascii_lowercase + string.digits
    while True:
        run_id = "".join(secrets.choice(alphabet) for _ in range(8))
        if not (Path(parent) / run_id).exists():
            return run_id


def job_identity(run_name: str | None, environ: dict | None = None) -> str | None:
    """Who this job is, across requeues and ranks: ``run_name``; else the SLURM job (array job and
    task, with the cluster's name); None for a local or torchrun launch (found by auto-resume)."""
    env = os.environ if environ is None else environ
    if run_name:
        return f"name:{run_name}"
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")
    if job:
        task = env.get("SLURM_ARRAY_TASK_ID", "")
        return f"slurm:{env.get('SLURM_CLUSTER_NAME', '')}:{job}:{task}"
    # torchrun gives no identity that outlives its launch (its rendezvous id defaults to "none" and
    # the port changes): its processes find their run by auto-resume, like a local run
    return None


def run_id_of(identity: str) -> str:
    """The run id of a job identity: 8 characters of its SHA-256 in base 36 (a valid wandb id)."""
    number = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big")
    alphabet = string.digits + string.ascii_lowercase
    out = ""
    for _ in range(8):
        number, digit = divmod(number, 36)
        out += alphabet[digit]
    return out


# ----------------------------------------------------------------------------- the lock
def _holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def holder_is_dead(holder: dict, age_s: float, me: dict | None = None) -> bool:
    """Whether the process named by a lock is gone: an earlier incarnation of this SLURM job; on
    this host, its pid no longer exists; elsewhere, a heartbeat older than STALE_S."""
    me = me or _holder()
    if holder.get("slurm_job") and holder.get("slurm_job") == me["slurm_job"]:
        if int(holder.get("slurm_restart") or 0) < me["slurm_restart"]:
            return True
    pid = holder.get("pid")
    if holder.get("host") == me["host"] and isinstance(pid, int) and pid > 0:
        if pid == me["pid"]:
            return True  # our own, left by an earlier attempt in this process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):
            return False
        return False
    # another host, or a record without a usable pid: only the heartbeat tells
    return age_s > STALE_S


class RunLock:
    """The lock of a run folder, held by global rank 0 while it trains there (see the module
    docstring). Use :meth:`acquire` / :meth:`release` or as a context manager."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.me = _holder()

    def _read(self) -> tuple[dict, float] | None:
        try:
            text, age = self.path.read_text(), time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}
        return (holder if isinstance(holder, dict) else {}), age

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as err:  # a read-only or full file system
            raise RunFolderError(f"cannot lock run folder {self.path.parent}: {err}") from err

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, umask_mode())
            except FileExistsError:
                found = self._read()
                if found is None:
                    continue  # released meanwhile
                holder, age = found
                if not holder_is_dead(holder, age, self.me):
                    raise RunFolderError(  # noqa: B904 (the taken file is the reason, not an error)
                        f"run folder {self.path.parent} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')}"
                        + (f" (SLURM job {holder['slurm_job']})" if holder.get("slurm_job") else "")
                        + f" since {holder.get('started')}; wait for it to end, or start another run "
                        "(another run_name or checkpoint.dir)"
                    )
                # take over: our record replaces the dead holder's in one rename, then check we won
                write_json_atomic(self.path, self.me)
                time.sleep(0.05)
                found = self._read()
                if self._mine(found):
                    break
                continue
            else:
                with os.fdopen(fd, "w") as f:
                    json.dump(self.me, f)
                break
        else:
            raise RunFolderError(
                f"could not lock run folder {self.path.parent}: another process keeps taking it"
            )
        self._thread = threading.Thread(target=self._beat, name="solo-ext-run-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def _mine(self, found: tuple[dict, float] | None) -> bool:
        return found is not None and (found[0].get("pid"), found[0].get("host")) == (
            self.me["pid"],
            self.me["host"],
        )

    def release(self) -> None:
        """Remove our lock, and the run folder with it if nothing else was written there (a run
        stopped by a user error before it started leaves no empty folder)."""
        self._stop.set()
        if self._mine(self._read()):
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass  # the run's files are there

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------- finding a run
# Keys whose values must agree for an old run to be continued by auto-resume (solo-learn's list,
# plus the model, the method's settings, the augmentations, the seed and the data, so that two
# trials of a sweep, or the same recipe on other data, never continue each other).
SHOULD_MATCH = (
    "name",
    "method",
    "method_kwargs",
    "augmentations",
    "seed",
    "backbone.name",
    "backbone.kwargs",
    "data.dataset",
    "data.train_path",
    "data.val_path",
    "data.fraction",
    "data.format",
    "data.no_labels",
    "max_epochs",
    "optimizer.name",
    "optimizer.batch_size",
    "optimizer.lr",
    "optimizer.weight_decay",
    "wandb.project",
    "wandb.entity",
)


def read_json_object(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON object in ``path``, None), or (None, what is wrong with it in words: "cannot be
    read (...)", "is not valid JSON (...)", "holds a JSON list, not an object"). A run's args.json
    and results.json are read through this alone; each caller decides what a problem means (a
    warning, a refusal naming its key, a run passed over)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot be read ({exc.strerror if isinstance(exc, OSError) else exc})"
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    return data, None


def read_args(run_dir: Path) -> dict | None:
    """A run's ``args.json`` as a mapping, or None when it is missing or unreadable."""
    return read_json_object(Path(run_dir) / ARGS_FILE)[0]


def select(mapping: Any, dotted: str) -> Any:
    """``mapping["a"]["b"]`` for ``"a.b"`` (None where a level is missing); works on dicts and
    DictConfigs alike."""
    for part in dotted.split("."):
        try:
            mapping = mapping[part] if part in mapping else None
        except TypeError:
            return None
        if mapping is None:
            return None
    return mapping


def plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def mismatched_keys(old: dict, cfg: Any, keys=SHOULD_MATCH) -> list[str]:
    """The keys of ``keys`` on which a run's args.json and ``cfg`` disagree."""
    return [key for key in keys if plain(select(old, key)) != plain(select(cfg, key))]


def find_resumable(
    cfg: Any, warn: Callable[[str], None] = print, keys=SHOULD_MATCH
) -> tuple[Path | None, str | None]:
    """The newest readable checkpoint of a run under ``checkpoint.dir/<method>`` whose args.json
    matches ``cfg`` on SHOULD_MATCH, that no job identity owns (a job's run is found by its
    identity, never by another job's auto-resume), and that is younger than
    ``auto_resume.max_hours``; (None, None) if none."""
    root = Path(cfg.checkpoint.dir) / cfg.method
    if not root.is_dir():
        return None, None
    max_age = cfg.auto_resume.max_hours * 3600
    candidates = []
    for args_file in root.glob("*/args.json"):
        states = states_in(args_file.parent)
        if not states or time.time() - states[-1].stat().st_mtime > max_age:
            continue
        old = read_args(args_file.parent)
        if old is None or old.get("job_identity") or mismatched_keys(old, cfg, keys):
            continue
        candidates.append((states[-1].stat().st_mtime, args_file.parent))
    for _, run_dir in sorted(candidates, reverse=True):
        ckpt = newest_readable_state(run_dir, warn)
        if ckpt is not None:
            return ckpt, run_dir.name
    return None, None
