"""The Lightning hooks of the non-finite guard (:mod:`solo_ext.utils.nonfinite`), shared by the
pretraining methods and the linear-evaluation model.

A subclass creates ``self.guard = NonFiniteGuard()`` and calls ``self.guard.observe(total, logs)``
in its training step; these hooks do the rest: protect the update, read the guard's flag on the
host only at logging steps, at an epoch's end and before a checkpoint, and under fp16 watch the
GradScaler (skipped steps and the scale, logged as ``amp_skipped_steps`` and ``amp_scale``; the
count is kept in checkpoints).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

CHECKPOINT_KEY = "solo_ext_guard"


class GuardedModule(pl.LightningModule):
    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """The GradScaler of Lightning's ``16-mixed`` precision, or None (bf16, fp32)."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        # after backward, before the update: a non-finite loss or gradient never reaches the
        # weights (fused Adam/AdamW skip the update on the device, others step on zero gradients);
        # under fp16 the GradScaler skips such updates itself and the guard only watches it
        scaler = self.grad_scaler()
        self.guard.protect(optimizer, self.global_step, scaler)
        if scaler is not None:
            self.guard.before_step(scaler, self.global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        scaler = self.grad_scaler()
        if scaler is not None:
            self.guard.after_step(scaler)
            self.log_dict(self.guard.scaler_logs(), on_step=True, on_epoch=False)
        # the host reads the guard's flag only where Lightning reads the logged values anyway
        if (self.global_step % self.trainer.log_every_n_steps) == 0:
            self.guard.raise_if_tripped(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self.guard.raise_if_tripped(self.current_epoch)

    def on_save_checkpoint(self, checkpoint) -> None:
        # no checkpoint is written after a skipped update: the last one stays the last good one
        self.guard.raise_if_tripped(self.current_epoch)
        checkpoint[CHECKPOINT_KEY] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint) -> None:
        self.guard.load_state_dict(checkpoint.get(CHECKPOINT_KEY, {}))
