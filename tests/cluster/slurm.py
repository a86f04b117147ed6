"""A real one-node SLURM cluster on localhost, for the ``slurm`` tests.

Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install -y slurm-wlm munge``), run as root.
Everything the cluster writes lives in one temporary folder: its munge key, socket and log, the
``slurm.conf`` (clients find it through ``SLURM_CONF``, so nothing under ``/etc`` is read or
changed), slurmctld's state, slurmd's spool, the daemons' pid files and logs. The two SLURM ports
are chosen free, so that the cluster does not meet another one on this machine.

Bring-up, in order: a munge key (``mungekey``, owned by the munge user, mode 400); ``munged`` as
the munge user, checked with a credential round trip; ``slurm.conf``; ``slurmctld``; ``slurmd``;
then ``sinfo`` until the node is idle. :meth:`SlurmCluster.stop` cancels the jobs left, stops the
three daemons by the pids they wrote and removes the folder. A failed start stops whatever it had
started before raising :class:`ClusterUnavailable`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("mungekey", "munged", "munge", "unmunge", "slurmctld", "slurmd", "sinfo", "sbatch", "srun")
BINARIES += ("scontrol", "scancel", "squeue")
INSTALL = "apt-get install -y slurm-wlm munge (as root)"
# The node is described from the configuration, not from the hardware (config_overrides): four
# CPUs whatever the machine has, so that a 2-task step and two 1-CPU jobs fit at once.
CPUS = 4
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}

SLURM_CONF = """\
ClusterName=soloext
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
FirstJobId=41000
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} CoresPerSocket={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailable(RuntimeError):
    """The cluster could not be brought up here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"({path}: {err})"
    return text[-chars:]


class SlurmCluster:
    """One node (this host) and one partition ``debug``; ``env`` is the environment for clients."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.host = socket.gethostname().split(".")[0]
        self.pids: dict[str, int] = {}
        self.env: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    # -- bring-up ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        missing = [name for name in BINARIES if shutil.which(name) is None]
        if missing:
            raise ClusterUnavailable(f"not installed: {', '.join(missing)}; {INSTALL}")
        if os.geteuid() != 0:
            raise ClusterUnavailable("slurmd and munged need root here (SlurmdUser=root); run as root")
        try:
            pwd.getpwnam("munge")
        except KeyError:
            raise ClusterUnavailable(f"no 'munge' user (the munge package creates it); {INSTALL}") from None
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _step(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 3)

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        # munged walks the socket's path and wants every folder on it searchable by all
        self.root = Path(tempfile.mkdtemp(prefix="solo-ext-slurm-"))
        self.root.chmod(0o755)
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir(mode=0o755)
        munge_dir = self.root / "munge"
        munge = pwd.getpwnam("munge")
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        key = munge_dir / "munge.key"
        self._run(["mungekey", "--create", f"--keyfile={key}"], "mungekey")
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        sock = munge_dir / "munge.socket"
        self._run(
            [
                "munged",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            "munged",
            user="munge",
        )
        self.pids["munged"] = self._read_pid(munge_dir / "munged.pid", munge_dir / "munged.log")
        cred = self._run(["munge", "-n", f"--socket={sock}"], "munge").stdout
        self._run(["unmunge", f"--socket={sock}"], "unmunge", input=cred)
        self._step("munged", t0)

        conf = self.root / "slurm.conf"
        ports = {"ctld_port": free_port(), "slurmd_port": free_port()}
        conf.write_text(
            SLURM_CONF.format(host=self.host, root=self.root, munge_socket=sock, cpus=CPUS, **ports)
        )
        self.env = {**clean_env(), "SLURM_CONF": str(conf)}
        self._run(["slurmctld"], "slurmctld")
        self.pids["slurmctld"] = self._read_pid(self.root / "slurmctld.pid", self.root / "log/slurmctld.log")
        self._run(["slurmd"], "slurmd")
        self.pids["slurmd"] = self._read_pid(self.root / "slurmd.pid", self.root / "log/slurmd.log")
        self._step("daemons", t0)

        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-n", self.host, "-o", "%T"], env=self.env, capture_output=True, text=True
            )
            state = (out.stdout or out.stderr).strip()
            if out.returncode == 0 and state == "idle":
                self._step("idle", t0)
                return
            time.sleep(0.5)
        raise ClusterUnavailable(
            f"node {self.host} not idle after {timeout:.0f} s (sinfo: {state!r})\n{self.logs()}"
        )

    def _run(self, cmd: list[str], what: str, user: str | None = None, input: str | None = None):
        proc = subprocess.run(
            cmd,
            env=self.env or clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            input=input,
            cwd=self.root,
        )
        if proc.returncode != 0:
            raise ClusterUnavailable(
                f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}"
                + (f"\n{self.logs()}" if self.root else "")
            )
        return proc

    def _read_pid(self, pid_file: Path, log: Path, wait: float = 10.0) -> int:
        """The pid a forking daemon wrote (it writes the file once it runs)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            if _alive(pid):
                return pid
            break
        raise ClusterUnavailable(f"{pid_file.name}: the daemon is not running; its log:\n{_tail(log)}")

    # -- tear-down -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel the jobs still there, stop slurmd, slurmctld and munged (by pid: TERM, then KILL
        after 15 s) and remove the cluster's folder. Safe to call after a partial start."""
        if "slurmctld" in self.pids and _alive(self.pids["slurmctld"]):
            subprocess.run(["scancel", "--partition=debug"], env=self.env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                out = subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True, timeout=30
                )
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.5)
        # slurmctld last among the SLURM daemons would keep it asking slurmd; munged after both
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- jobs ----------------------------------------------------------------------------------

    def sbatch(self, script: Path, *options: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit ``script`` from ``cwd`` (the job's working directory); the job id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", *options, str(script)],
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"sbatch failed: {proc.stderr}\n{self.logs()}"
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, ExitCode, Reason, ...)."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", out.stdout))

    def wait(self, job_id: str, timeout: float, until=None, poll: float = 1.0) -> dict[str, str]:
        """Poll the job until ``until(fields)`` (default: it finished); its last fields. Raises
        TimeoutError naming the job's state."""
        until = until or (lambda fields: fields.get("JobState") in FINISHED)
        deadline = time.monotonic() + timeout
        fields = self.job(job_id)
        while not until(fields):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {fields.get('JobState')} after {timeout:.0f} s")
            time.sleep(poll)
            fields = self.job(job_id)
        return fields

    def scancel(self, job_id: str, *options: str) -> None:
        proc = subprocess.run(
            ["scancel", *options, job_id], env=self.env, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, f"scancel {' '.join(options)} {job_id}: {proc.stderr}"

    def logs(self, *job_outputs: Path) -> str:
        """The job outputs given, then slurmctld's and slurmd's logs (their tails): for a failure."""
        parts = [f"--- {p} ---\n{_tail(p)}" for p in job_outputs]
        if self.root is not None:
            for name in ("slurmctld", "slurmd"):
                parts.append(f"--- {name} log ---\n{_tail(self.root / 'log' / f'{name}.log', 3000)}")
        return "\n".join(parts)


def clean_env() -> dict[str, str]:
    """This environment without the SLURM, torchrun and wandb variables of whatever started the
    tests, so that a job sees only what its own launcher sets."""
    drop = ("SLURM_", "SLURMD_", "SBATCH_", "SRUN_", "SALLOC_", "WANDB_", "SOLO_EXT_", "TORCHELASTIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for key in ("LOCAL_RANK", "RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        env.pop(key, None)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
