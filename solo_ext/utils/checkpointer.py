"""Run directories, args.json, periodic checkpoints and auto-resume (solo-learn's Checkpointer and
AutoResumer), written so that nothing trained is lost: files are written atomically and an older
checkpoint is deleted only once its successor is complete."""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

# Keys whose values must agree for an old run to be continued (solo-learn's list, plus the model,
# the method's settings, the augmentations and the seed, so that two trials of a sweep never
# continue each other).
SHOULD_MATCH = (
    "name",
    "method",
    "method_kwargs",
    "augmentations",
    "seed",
    "backbone.name",
    "backbone.kwargs",
    "data.dataset",
    "max_epochs",
    "optimizer.name",
    "optimizer.batch_size",
    "optimizer.lr",
    "optimizer.weight_decay",
    "wandb.project",
    "wandb.entity",
)
CKPT_EPOCH = re.compile(r"-ep=(\d+)\.ckpt$")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=4, sort_keys=True, default=lambda _: "<not serializable>")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_run_id(parent: Path) -> str:
    """8 lowercase letters and digits (a valid wandb run id), unused under ``parent``."""
    alphabet = string.ascii_lowercase + string.digits
    while True:
        run_id = "".join(secrets.choice(alphabet) for _ in range(8))
        if not (parent / run_id).exists():
            return run_id


def checkpoints_in(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest epoch first (``.tmp`` files are unfinished)."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("*.ckpt") if (m := CKPT_EPOCH.search(p.name))]
    return [p for _, p in sorted(found)]


def find_resumable(cfg: DictConfig) -> tuple[Path | None, str | None]:
    """The newest checkpoint of a run under ``checkpoint.dir/<method>`` whose args.json matches
    ``cfg`` on SHOULD_MATCH and that is younger than ``auto_resume.max_hours``; (None, None) if none."""
    root = Path(cfg.checkpoint.dir) / cfg.method
    if not root.is_dir():
        return None, None
    max_age = cfg.auto_resume.max_hours * 3600
    candidates = []
    for args_file in root.glob("*/args.json"):
        ckpts = checkpoints_in(args_file.parent)
        if not ckpts or time.time() - ckpts[-1].stat().st_mtime > max_age:
            continue
        try:
            old = OmegaConf.create(json.loads(args_file.read_text()))
        except (OSError, ValueError):
            continue
        if all(OmegaConf.select(old, key) == OmegaConf.select(cfg, key) for key in SHOULD_MATCH):
            candidates.append((ckpts[-1].stat().st_mtime, ckpts[-1], args_file.parent.name))
    if not candidates:
        return None, None
    _, ckpt, run_id = max(candidates)
    return ckpt, run_id


class Checkpointer(Callback):
    """Writes ``args.json`` at the start and a checkpoint every ``frequency`` epochs into ``run_dir``;
    only global rank 0 touches the disk."""

    def __init__(
        self, cfg: DictConfig, run_dir: Path, run_id: str, frequency: int = 1, keep_prev: bool = False
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.frequency = frequency
        self.keep_prev = keep_prev

    def save_args(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        args = OmegaConf.to_container(self.cfg, resolve=True)
        args["run_id"] = args["wandb_run_id"] = self.run_id
        write_json_atomic(self.run_dir / "args.json", args)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            self.save_args()

    def checkpoint_path(self, epoch: int) -> Path:
        return self.run_dir / f"{self.cfg.name}-{self.run_id}-ep={epoch}.ckpt"

    def save(self, trainer: pl.Trainer) -> None:
        path = self.checkpoint_path(trainer.current_epoch)
        tmp = path.with_name(path.name + ".tmp")
        previous = checkpoints_in(self.run_dir) if trainer.is_global_zero else []
        # collective; rank 0 writes. weights_only=False keeps the optimizer and loop states (resume).
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, path)  # a kill during the write leaves only a .tmp, never a torn .ckpt
            if not self.keep_prev:
                for old in previous:
                    if old != path:
                        old.unlink(missing_ok=True)
        trainer.strategy.barrier("solo_ext_checkpoint")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.frequency == 0 or epoch + 1 == trainer.max_epochs:
            self.save(trainer)

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}
