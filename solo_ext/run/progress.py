"""Progress as plain lines when stdout is not a terminal (SLURM's log files, ``| tee``, CI):
Lightning's bar would fill the file with carriage-return redraws. One line every
``log_every_n_steps`` steps and at each epoch's last batch, flushed at once."""

from __future__ import annotations

import sys
import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


def wants_lines(enable_progress_bar: bool | None) -> bool:
    """Plain lines instead of Lightning's bar: stdout is no terminal and the bar was not turned off."""
    return enable_progress_bar is not False and not sys.stdout.isatty()


class ProgressLines(Callback):
    def __init__(self) -> None:
        self._start = time.monotonic()
        self._start_step = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._start_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = trainer.num_training_batches
        logging_step = trainer.global_step % trainer.log_every_n_steps == 0
        if not logging_step and batch_idx + 1 < total:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        # the loss is read on the host only at logging steps, where Lightning reads it anyway
        shown = f" loss {float(loss):.4f}" if logging_step and loss is not None else ""
        steps = trainer.global_step - self._start_step
        rate = steps / max(time.monotonic() - self._start, 1e-9)
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} batch {batch_idx + 1}/{total} "
            f"(global step {trainer.global_step}){shown} {rate:.2f} steps/s",
            flush=True,
        )
