"""What every regularizer shares: its weight schedule, which features it reads, and the gather.

A regularizer reads features of the masked training pass (``training_forward``'s dict):
``"cls"`` (the final-normed cls token, what U-MAE and M-MAE regularize; their code applies the
final norm to it twice, we once), ``"mean"`` (the mean of
the final-normed visible patch tokens), or a block index (the mean of that block's visible patch
tokens before the final norm, what MAGMA uses). Its weight comes from a stateless schedule of
(global step, epoch); a regularizer whose weight is 0 at a step is not computed at that step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from solo_ext.args.checks import check_bool, check_choice, check_keys, check_number
from solo_ext.schedulers.weights import build_weight_schedule
from solo_ext.utils.dist import gather
from solo_ext.utils.errors import ConfigError

COMMON_KEYS = {"weight", "scheduler", "features", "gather"}


def normalise_block(key: str, index: Any, depth: int) -> int:
    """A block index in [-depth, depth) as a non-negative index."""
    check_number(key, index, integer=True)
    if not -depth <= index < depth:
        raise ConfigError(f"{key}={index!r}: the backbone has {depth} blocks; allowed {-depth}..{depth - 1}")
    return index % depth


def feature_of(out: Mapping, features: str | int, block_positions: Mapping[int, int]) -> torch.Tensor:
    """The (N, D) features named ``features`` from one training pass's outputs."""
    if features == "cls":
        return out["tokens"][:, 0]
    if features == "mean":
        return out["tokens"][:, 1:].mean(dim=1)
    return out["blocks"][block_positions[features]][:, 1:].mean(dim=1)


def regularized_features(
    out: dict, features: str | int, block_positions: Mapping[int, int], gathered: bool
) -> torch.Tensor:
    """The features a regularizer reads, gathered over processes when asked. Each feature is
    gathered once per crop (kept in ``out["gathered"]``), however many regularizers read it:
    uniformity and TCR on the cls token cost one all-gather, not two."""
    z = feature_of(out, features, block_positions)
    if not gathered:
        return z
    cache = out.setdefault("gathered", {})
    if features not in cache:
        cache[features] = gather(z)
    return cache[features]


class Regularizer:
    """Subclasses set ``name``, ``params`` (their own keys with defaults), ``default_features``,
    ``default_gather`` and implement ``loss``."""

    name: str = ""
    params: dict[str, Any] = {}
    default_features: str | int = "cls"
    default_gather = True

    @classmethod
    def parse(cls, spec: Mapping, key: str, depth: int) -> dict:
        """Fill defaults and check one ``method_kwargs.regularizers.<name>`` block; returns the
        resolved block (its weight always as a ``scheduler`` mapping)."""
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{key}={spec!r}: must be a mapping")
        spec = dict(spec)
        check_keys(key, spec, COMMON_KEYS | set(cls.params))
        if ("weight" in spec) == ("scheduler" in spec):
            raise ConfigError(f"{key}: give exactly one of weight (a constant) or scheduler (a schedule)")
        if "weight" in spec:
            check_number(f"{key}.weight", spec["weight"], low=0)
            spec["scheduler"] = {"name": "constant", "weight": spec.pop("weight")}
        sched = spec["scheduler"]
        if not isinstance(sched, Mapping):
            raise ConfigError(f"{key}.scheduler={sched!r}: must be a mapping with a name")
        sched = dict(sched)
        sched.setdefault("interval", "epoch")
        check_choice(f"{key}.scheduler.interval", sched["interval"], ("epoch", "step"))
        build_schedule(sched, f"{key}.scheduler")
        spec["scheduler"] = sched
        features = spec.get("features", cls.default_features)
        if isinstance(features, str):
            check_choice(f"{key}.features", features, ("cls", "mean"))
        else:
            features = normalise_block(f"{key}.features", features, depth)
        spec["features"] = features
        spec["gather"] = check_bool(f"{key}.gather", spec.get("gather", cls.default_gather))
        for param, default in cls.params.items():
            spec.setdefault(param, default)
        return cls.check_params(spec, key, depth)

    @classmethod
    def check_params(cls, spec: dict, key: str, depth: int) -> dict:
        return spec

    def __init__(self, spec: Mapping):
        self.spec = dict(spec)
        sched = dict(spec["scheduler"])
        self.per_step = sched["interval"] == "step"
        self.schedule = build_schedule(sched, f"regularizers.{self.name}.scheduler")
        self.features = spec["features"]
        self.gather = spec["gather"]

    def weight(self, step: int, epoch: int, epoch_fraction: float) -> float:
        return self.schedule(step, epoch + epoch_fraction if self.per_step else epoch)

    def blocks(self) -> set[int]:
        """Block indices whose outputs this regularizer reads."""
        return {self.features} if isinstance(self.features, int) else set()

    def features_of(self, out: dict, block_positions: Mapping[int, int]) -> torch.Tensor:
        return regularized_features(out, self.features, block_positions, self.gather)

    def __call__(self, out: Mapping, block_positions: Mapping[int, int]) -> tuple[torch.Tensor, dict]:
        """(raw loss, extra values to log) for one large crop."""
        raise NotImplementedError


def build_schedule(sched: Any, key: str):
    """The weight schedule of a regularizer's ``scheduler`` block; its ``interval`` key says how
    the epoch is counted (per epoch or per step), not the schedule's shape, so it is left out."""
    if isinstance(sched, Mapping):
        sched = {k: v for k, v in sched.items() if k != "interval"}
    return build_weight_schedule(sched, key)
