"""MAE plus any mix of regularizers (uniformity, TCR, MAGMA), each with its own weight schedule.

Configured by ``method_kwargs.regularizers.<name>: {weight | scheduler, features, gather, ...}``;
MAGMA's flat keys (``layers``, ``reg_scheduler``, ``uniformity_weight``, ...) are rewritten into
that form by the config layer (``solo_ext.config.compat``), so ``args.json`` shows exactly what ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from omegaconf import DictConfig
from pydantic import create_model

from solo_ext.methods.mae import MAE, MAEKwargs
from solo_ext.regularizers import REGULARIZERS
from solo_ext.regularizers.base import RegularizerSpec
from solo_ext.utils.declared import Declared

# method_kwargs.regularizers: one optional block per registered regularizer
if TYPE_CHECKING:  # the type checker sees a declared section; pydantic, below, its field per regularizer
    Regularizers = Declared
else:
    Regularizers = create_model(
        "Regularizers",
        __base__=Declared,
        **{name: (cls.Spec | None, None) for name, cls in REGULARIZERS.items()},
    )
    Regularizers.where = "method_kwargs.regularizers"


class MAERegKwargs(MAEKwargs):
    regularizers: Regularizers = Regularizers()
    reset_classifier: bool = False
    # Read by MAGMA's code but without effect there (log_images draws matrices; the disparity keys
    # are defaulted and never used); accepted so its recipes run unchanged.
    ignored: ClassVar[frozenset[str]] = frozenset(
        {"log_images", "disparity_loss_gamma", "disparity_loss_rbf_scale", "scheduler"}
    )

    def dump(self) -> dict[str, Any]:
        out = self.model_dump()
        out["regularizers"] = {k: v for k, v in out["regularizers"].items() if v is not None}
        return out

    def regularizer_specs(self) -> dict[str, RegularizerSpec]:
        return {name: spec for name in REGULARIZERS if (spec := getattr(self.regularizers, name)) is not None}


class MAERegularized(MAE):
    Kwargs: ClassVar[type[MAEKwargs]] = MAERegKwargs

    def __init__(self, cfg: DictConfig, kwargs: MAEKwargs | None = None):
        super().__init__(cfg, kwargs)
        # the validated blocks themselves: each weight schedule as the config layer built it
        specs = self.kwargs.regularizer_specs()
        self.regularizers = [REGULARIZERS[name](spec) for name, spec in specs.items()]
        self._weights: dict[str, float] = {}

    def current_weights(self, batch_idx: int) -> dict[str, float]:
        """Each regularizer's weight at this step: pure functions of (global step, epoch), so a
        resumed run gets the same weights."""
        batches = self.trainer.num_training_batches if self._trainer is not None else 0
        fraction = batch_idx / batches if batches and batches != float("inf") else 0.0
        return {
            reg.name: reg.weight(self.global_step, self.current_epoch, fraction) for reg in self.regularizers
        }

    def on_train_batch_start(self, batch, batch_idx):
        self._weights = self.current_weights(batch_idx)

    def _active(self):
        return [reg for reg in self.regularizers if self._weights.get(reg.name, 0.0) != 0.0]

    def training_forward(self, x, indexes=None, crop=0, block_indices=()):
        # Only the blocks an active regularizer reads are returned: a regularizer at weight 0
        # costs nothing.
        blocks = sorted(set(block_indices).union(*(reg.blocks() for reg in self._active())))
        out = super().training_forward(x, indexes, crop, tuple(blocks))
        out["block_positions"] = {b: i for i, b in enumerate(blocks)}
        return out

    def method_loss(self, crops, outs):
        loss, logs = super().method_loss(crops, outs)
        for reg in self.regularizers:
            weight = self._weights.get(reg.name, 0.0)
            logs[f"train_{reg.name}_weight"] = weight
            if weight == 0.0:
                continue
            values, extra_logs = zip(*(reg(out, out["block_positions"]) for out in outs))
            value = torch.stack(values).mean()
            for extra in extra_logs:
                logs.update(extra)
            logs[f"train_{reg.name}_loss"] = value
            loss = loss + weight * value
        return loss, logs


class UMAE(MAERegularized):
    """MAGMA's ``u-mae``: its ``reg_scheduler`` weights the uniformity term (rewritten by the
    config layer's compatibility pass)."""
