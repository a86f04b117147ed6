"""MAE plus any mix of regularizers (uniformity, TCR, MAGMA), each with its own weight schedule.

Two ways to configure it:

- the general form, ``method_kwargs.regularizers.<name>: {weight | scheduler, features, gather, ...}``;
- MAGMA's keys, read as its code meant them: ``layers`` + ``reg_scheduler`` (+ ``rbf_scale``,
  ``fixed_gamma``, ``scale_euclidean_distance``) switch MAGMA on and ``uniformity_weight`` adds a
  constant-weight uniformity term (per process, as MAGMA's port computes it). With method ``u-mae``
  (MAGMA's meaning) ``reg_scheduler`` weights the uniformity term instead.

The legacy keys are rewritten into the general form by ``parse_method_kwargs``, so ``args.json``
shows exactly what ran.
"""

from __future__ import annotations

import torch

from solo_ext.args.checks import check_bool, check_choice, check_number
from solo_ext.methods.mae import MAE, MAE_DEFAULTS
from solo_ext.regularizers import REGULARIZERS
from solo_ext.regularizers.base import build_schedule
from solo_ext.utils.errors import ConfigError

LEGACY_KEYS = (
    "layers",
    "uniformity_weight",
    "reg_scheduler",
    "rbf_scale",
    "fixed_gamma",
    "scale_euclidean_distance",
)
# Read by MAGMA's code but without effect there (log_images draws matrices; the disparity keys are
# defaulted and never used); accepted so its recipes run unchanged.
MAGMA_UNUSED = frozenset({"log_images", "disparity_loss_gamma", "disparity_loss_rbf_scale", "scheduler"})


def _check_legacy_values(legacy: dict) -> None:
    """The flat keys' values checked under the names the user wrote (the general form they are
    rewritten into would otherwise answer about method_kwargs.regularizers.*)."""
    if "uniformity_weight" in legacy:
        check_number("method_kwargs.uniformity_weight", legacy["uniformity_weight"], low=0)
    if legacy.get("reg_scheduler") is not None:
        build_schedule(legacy["reg_scheduler"], "method_kwargs.reg_scheduler")
    if "rbf_scale" in legacy:
        check_number("method_kwargs.rbf_scale", legacy["rbf_scale"], low=0, low_open=True)
    if legacy.get("fixed_gamma"):
        check_number("method_kwargs.fixed_gamma", legacy["fixed_gamma"], low=0, low_open=True)
    if "scale_euclidean_distance" in legacy:
        check_bool("method_kwargs.scale_euclidean_distance", legacy["scale_euclidean_distance"])


def _legacy_to_regularizers(mk: dict, method: str) -> dict:
    """MAGMA's flat keys as ``regularizers`` blocks."""
    legacy = {key: mk.pop(key) for key in LEGACY_KEYS if key in mk}
    _check_legacy_values(legacy)
    regs: dict[str, dict] = {}
    schedule = legacy.get("reg_scheduler")
    if method == "u-mae":
        if schedule is not None:
            regs["uniformity"] = {"scheduler": schedule, "features": "cls", "gather": False}
        return regs
    layers = legacy.get("layers") or []
    if layers:
        if schedule is None:
            raise ConfigError(
                "method_kwargs.reg_scheduler: missing; MAGMA (method_kwargs.layers) needs a schedule"
            )
        if not isinstance(layers, list):
            raise ConfigError(f"method_kwargs.layers={layers!r}: must be a list of block indices")
        regs["magma"] = {
            "scheduler": schedule,
            # MAGMA's code: with two layers the second is the target, otherwise the last block.
            "layers": layers,
            "target_layer": layers[-1] if len(layers) == 2 else -1,
            "rbf_scale": legacy.get("rbf_scale", 1.0),
            "fixed_gamma": legacy.get("fixed_gamma") or None,
            "scale_euclidean_distance": legacy.get("scale_euclidean_distance", False),
            "gather": False,
        }
    elif schedule is not None:
        raise ConfigError(
            "method_kwargs.reg_scheduler: set, but method_kwargs.layers is empty (MAGMA needs blocks)"
        )
    weight = legacy.get("uniformity_weight", 0)
    if weight:
        regs["uniformity"] = {"weight": weight, "features": "cls", "gather": False}
    return regs


class MAERegularized(MAE):
    kwargs_defaults = {**MAE_DEFAULTS, "regularizers": {}, "reset_classifier": False}
    kwargs_ignored = MAGMA_UNUSED | frozenset(LEGACY_KEYS)
    method_name = "mae-reg"

    @classmethod
    def parse_method_kwargs(cls, method_kwargs, backbone):
        mk = dict(method_kwargs)
        legacy = _legacy_to_regularizers(mk, cls.method_name)
        mk = super().parse_method_kwargs(mk, backbone)
        general = mk.get("regularizers") or {}
        if not isinstance(general, dict):
            raise ConfigError(
                f"method_kwargs.regularizers={general!r}: must be a mapping of name -> settings"
            )
        for name in set(general) & set(legacy):
            raise ConfigError(
                f"method_kwargs.regularizers.{name}: also set by MAGMA's flat keys; use one of the two forms"
            )
        resolved = {}
        for name, spec in {**legacy, **general}.items():
            check_choice("method_kwargs.regularizers", name, REGULARIZERS)
            resolved[name] = REGULARIZERS[name].parse(
                spec, f"method_kwargs.regularizers.{name}", backbone.depth
            )
        mk["regularizers"] = resolved
        check_bool("method_kwargs.reset_classifier", mk["reset_classifier"])
        return mk

    def __init__(self, cfg):
        super().__init__(cfg)
        self.regularizers = [
            REGULARIZERS[name](spec) for name, spec in cfg.method_kwargs.regularizers.items()
        ]
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
    """MAGMA's ``u-mae``: its ``reg_scheduler`` weights the uniformity term."""

    method_name = "u-mae"
