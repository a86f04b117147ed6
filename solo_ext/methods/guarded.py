"""The Lightning hooks of the non-finite guard (:mod:`solo_ext.utils.nonfinite`) and of exact
mid-epoch resume, shared by the pretraining methods and the linear-evaluation model.

A subclass creates ``self.guard = NonFiniteGuard()`` and calls ``self.guard.observe(total, logs)``
in its training step; these hooks do the rest: protect the update, read the guard's flag on the
host only at logging steps, at an epoch's end and before a checkpoint, and under fp16 watch the
GradScaler (skipped steps and the scale, logged as ``amp_skipped_steps`` and ``amp_scale``; the
count is kept in checkpoints).

Mid-epoch resume: every checkpoint keeps the random states of the process that writes it (torch's,
CUDA's, NumPy's, Python's). A run resumed from a checkpoint written in the middle of an epoch
(Lightning continues that epoch at the next batch) skips, in the epoch's sampler, the samples the
first run already trained on, and takes back the random states after the epoch's own seeding, so
with ``data.num_workers: 0`` it computes what the uninterrupted run computed, bit for bit. Not
exact, and said at resume: under DDP the states of ranks above 0 (only rank 0's are saved; theirs
are re-derived from the seed, epoch and step), with workers the workers' augmentation streams
(the samples and their order are the same), and DALI (whose sampler cannot skip: it restarts the
epoch's order).
"""

from __future__ import annotations

import random
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch

from solo_ext.utils.nonfinite import NonFiniteGuard
from solo_ext.utils.seeds import seed_epoch

CHECKPOINT_KEY = "solo_ext_guard"
RNG_KEY = "solo_ext_rng"


def rng_state() -> dict:
    """The process's random states, as tensors, ints and lists (no NumPy objects in checkpoints)."""
    # the legacy form (the default): a tuple, not the dict of get_state(legacy=False)
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = legacy
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": [int(has_gauss), float(gauss)],
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], has_gauss, gauss)
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def skip_first(sampler, count: int) -> None:
    """Make the next iteration of ``sampler`` (a RandomSampler, Lightning's DistributedSampler, ...)
    leave out its first ``count`` indices, once; later epochs iterate it whole."""
    base: Any = type(sampler)  # a class known only at run time

    class _Resumed(base):
        def __iter__(self):
            self.__class__ = base
            indices = base.__iter__(self)
            for _ in range(count):
                next(indices, None)
            yield from indices

    _Resumed.__name__ = base.__name__
    sampler.__class__ = _Resumed


class GuardedModule(pl.LightningModule):
    guard: NonFiniteGuard  # created by the subclass

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
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning's logger connector
        if (self.global_step % every) == 0:
            self.guard.raise_if_tripped(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self.guard.raise_if_tripped(self.current_epoch)

    def on_validation_start(self) -> None:
        # a validation inside or at the end of an epoch runs before on_train_epoch_end: a diverged
        # run stops here (exit 3), before diagnostics read non-finite features
        self.guard.raise_if_tripped(self.current_epoch)

    def on_save_checkpoint(self, checkpoint) -> None:
        # no checkpoint is written after a skipped update: the last one stays the last good one
        self.guard.raise_if_tripped(self.current_epoch)
        checkpoint[CHECKPOINT_KEY] = self.guard.state_dict()
        checkpoint[RNG_KEY] = rng_state()

    def on_load_checkpoint(self, checkpoint) -> None:
        self.guard.load_state_dict(checkpoint.get(CHECKPOINT_KEY, {}))
        self._resumed_rng = checkpoint.get(RNG_KEY)

    def resume_mid_epoch(self, batch_size: int, seed: int) -> int:
        """At train start, after the epoch's seeding: when the run resumes inside an epoch, skip
        the samples already trained on and take back the saved random states. Returns the batches
        of the epoch already done (0 when the run starts at an epoch's beginning)."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress
        done = progress.current.processed  # type: ignore[attr-defined]  # a _ProcessedTracker, typed as its base
        state, self._resumed_rng = getattr(self, "_resumed_rng", None), None
        # a checkpoint of an epoch's end restores that epoch's count (all its batches) while the
        # run starts the next one at its beginning
        if not done or state is None or done >= self.trainer.num_training_batches:
            return 0
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        gaps = []
        if sampler is not None and hasattr(type(sampler), "__iter__") and getattr(loader, "batch_size", None):
            skip_first(sampler, done * batch_size)
        else:
            gaps.append("this loader cannot skip: the epoch's order restarts")
        if self.global_rank == 0:
            set_rng_state(state)
        else:
            seed_epoch(seed, self.current_epoch * 1_000_003 + self.global_step, self.global_rank)
            gaps.append("ranks above 0 draw new random streams")
        if self.trainer.world_size == 1 and getattr(loader, "num_workers", 0) > 0:
            gaps.append("data workers draw new augmentation streams")
        if self.trainer.is_global_zero:
            print(
                f"resume: epoch {self.current_epoch} continues at batch {done} "
                f"(global step {self.global_step}); "
                "the online kNN bank holds only the epoch's remaining batches"
                + (f"; not bit-exact: {', '.join(gaps)}" if gaps else "")
            )
        return done
