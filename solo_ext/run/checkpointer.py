"""The Lightning callback that writes a run's state into its folder (solo-learn's Checkpointer,
made preemption-safe): ``args.json`` at the start, a checkpoint at the end of every ``frequency``
epochs, mid-epoch states every ``checkpoint.every_n_steps`` steps or ``every_n_minutes`` minutes,
and, on SIGUSR1, SIGTERM or SIGINT, the exact state at the next batch boundary, then the exit code
of the signal (128 + its number) after a SLURM requeue for SIGUSR1. Files are written atomically
by :mod:`solo_ext.utils.runfolder`; an older state is deleted only once its successor is complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from solo_ext.utils.errors import Interrupted
from solo_ext.utils.runfolder import (
    ARGS_FILE,
    RunFolderError,
    epoch_checkpoints,
    publish,
    states_in,
    temporary_name,
    write_json_atomic,
)

SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class Checkpointer(Callback):
    """Writes into ``run_dir``; only global rank 0 touches the disk.

    Args:
        frequency: an epoch checkpoint every this many epochs (and at the last one).
        keep_prev: keep every epoch checkpoint (mid-epoch states are always replaced by the next).
        every_n_steps / every_n_minutes: mid-epoch states (None: none).
        identity: the job identity recorded in args.json (how a requeued job finds its run).
        save_on_signal: answer SIGUSR1/SIGTERM/SIGINT by saving and exiting (see the module doc).
        enabled: write checkpoints (``checkpoint.enabled``); without, only args.json, and a signal
            stops the run with its exit code, nothing saved.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        run_id: str,
        frequency: int = 1,
        keep_prev: bool = False,
        every_n_steps: int | None = None,
        every_n_minutes: float | None = None,
        identity: str | None = None,
        save_on_signal: bool = True,
        enabled: bool = True,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.frequency = frequency
        self.keep_prev = keep_prev
        self.every_n_steps = every_n_steps
        self.every_n_minutes = every_n_minutes
        self.identity = identity
        self.save_on_signal = save_on_signal
        self.enabled = enabled
        self._signal: int | None = None
        self._stopping: tuple[int, Path | None] | None = None
        self._handlers: dict = {}
        self._last_save = time.monotonic()

    # ----------------------------------------------------------------- files
    def save_args(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        args = cast(dict[str, Any], OmegaConf.to_container(self.cfg, resolve=True))
        args["run_id"] = args["wandb_run_id"] = self.run_id
        args["job_identity"] = self.identity
        write_json_atomic(self.run_dir / ARGS_FILE, args)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            self.save_args()

    def checkpoint_path(self, epoch: int, step: int | None = None) -> Path:
        middle = "" if step is None else f"-step={step}"
        return self.run_dir / f"{self.cfg.name}-{self.run_id}-ep={epoch}{middle}.ckpt"

    def save(self, trainer: pl.Trainer, mid_epoch: bool = False) -> Path | None:
        """The trainer's whole state (weights, optimizer, loops, random states) into the run
        folder, atomically; then the states it supersedes are deleted (rank 0). None when
        checkpoints are off."""
        if not self.enabled:
            return None
        path = self.checkpoint_path(trainer.current_epoch, trainer.global_step if mid_epoch else None)
        tmp = temporary_name(path)
        previous = states_in(self.run_dir) if trainer.is_global_zero else []
        kept = set(epoch_checkpoints(self.run_dir)) if self.keep_prev else set()
        try:
            # collective; rank 0 writes. weights_only=False keeps the optimizer and loop states.
            trainer.save_checkpoint(tmp, weights_only=False)
            if trainer.is_global_zero:
                publish(tmp, path)  # fsync, rename, fsync the folder: never a torn .ckpt
        except OSError as err:  # a full disk, a read-only folder: the previous state stays whole
            intact = f"; the previous state {previous[-1]} is intact" if previous else ""
            raise RunFolderError(f"cannot write checkpoint {path}: {err}{intact}") from err
        finally:
            tmp.unlink(missing_ok=True)
        if trainer.is_global_zero:
            for old in previous:
                if old != path and old not in kept:
                    old.unlink(missing_ok=True)
        trainer.strategy.barrier("solo_ext_checkpoint")
        self._last_save = time.monotonic()
        return path

    # ----------------------------------------------------------------- when
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        if self.save_on_signal and threading.current_thread() is threading.main_thread():
            # after Lightning registered its own handlers (restored by its teardown)
            for signum in SIGNALS:
                self._handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self._signal is None:
            self._signal = signum

    def _agreed(self, trainer: pl.Trainer, value: float, every_step: bool) -> float:
        """``value`` maximised over processes; under DDP only at logging steps (a collective and
        a host read), 0 elsewhere."""
        if trainer.world_size == 1:
            return value
        if not every_step and trainer.global_step % trainer.log_every_n_steps:  # type: ignore[attr-defined]  # set by Lightning's logger connector
            return 0.0
        flag = torch.tensor([value], dtype=torch.float64, device=trainer.strategy.root_device)
        return float(trainer.strategy.reduce(flag, reduce_op="max").item())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = int(self._agreed(trainer, float(self._signal or 0), every_step=False))
        if signum and self._stopping is None:
            # saved now; the run stops at the next batch's start (or after this epoch's end),
            # once Lightning has logged this step, so no step goes unlogged or is logged twice
            self._stopping = (signum, self.save(trainer, mid_epoch=True))
            return
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        due = bool(self.every_n_steps) and trainer.global_step % self.every_n_steps == 0
        if self.every_n_minutes and not due:
            elapsed = time.monotonic() - self._last_save >= 60 * self.every_n_minutes
            due = bool(self._agreed(trainer, float(elapsed), every_step=False))
        if due and not last_batch:
            self.save(trainer, mid_epoch=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._stopping is not None:
            self._stop(trainer, *self._stopping)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.frequency == 0 or epoch + 1 == trainer.max_epochs:
            path = self.save(trainer)
            if self._stopping is not None and path is not None:
                self._stopping = (self._stopping[0], path)  # the epoch's end supersedes the state
        if self._stopping is not None:
            self._stop(trainer, *self._stopping)

    def _stop(self, trainer: pl.Trainer, signum: int, path: Path | None) -> None:
        self._stopping = None
        saved = (
            f"the run's state is saved in {path}" if path else "nothing saved (checkpoint.enabled is False)"
        )
        name = signal.Signals(signum).name
        requeued = ""
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
        if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if signum == signal.SIGUSR1 and job and path and trainer.is_global_zero:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            requeued = (
                f"; SLURM job {job} requeued"
                if result.returncode == 0
                else f"; scontrol requeue {job} failed: {(result.stderr or result.stdout).strip()}"
            )
        raise Interrupted(signum, f"{name} at global step {trainer.global_step}: {saved}{requeued}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers = {}

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}
