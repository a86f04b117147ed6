"""What every regularizer shares: its weight schedule, which features it reads, and the gather.

A regularizer reads features of the masked training pass (``training_forward``'s dict):
``"cls"`` (the final-normed cls token, what U-MAE and M-MAE regularize; their code applies the
final norm to it twice, we once), ``"mean"`` (the mean of
the final-normed visible patch tokens), or a block index (the mean of that block's visible patch
tokens before the final norm, what MAGMA uses). Its weight comes from a stateless schedule of
(global step, epoch); a regularizer whose weight is 0 at a step is not computed at that step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, cast

import torch
from pydantic import Field, ValidationInfo, model_validator

from solo_ext.schedulers.weights import ConstantWeight, ScheduleSpec, WeightSchedule
from solo_ext.utils.declared import Declared, NonNegative, Rule, plain
from solo_ext.utils.dist import gather
from solo_ext.utils.errors import NO_VALUE

# a block index, counted from the end when negative (checked against the backbone's depth)
BlockIndex = int
Features = Literal["cls", "mean"] | BlockIndex


def normalise_block(index: int, depth: int | None) -> int:
    """A block index in [-depth, depth) as a non-negative index (left as given when the depth
    is unknown, i.e. when a stored, already normalised spec is read back)."""
    return index if depth is None else index % depth


def outside(index: Any, depth: int | None) -> bool:
    """Whether ``index`` is a block index outside a backbone of ``depth`` blocks (no depth: a
    stored spec, already checked)."""
    return depth is not None and isinstance(index, int) and not -depth <= index < depth


def blocks_text(spec: Any, context: Mapping) -> str:
    depth = context["depth"]
    return f"the backbone has {depth} blocks; allowed {-depth}..{depth - 1}"


class RegularizerSpec(Declared):
    """One ``method_kwargs.regularizers.<name>`` block: its weight, as a constant ``weight`` or a
    ``scheduler`` (exactly one), which ``features`` it reads and whether it ``gather``s them over
    processes; subclasses add their own parameters. Validated with the backbone's ``depth`` in
    the validation context, block indices come out non-negative."""

    where: ClassVar[str] = "a regularizer"

    weight: NonNegative | None = Field(default=None, exclude=True)
    scheduler: ScheduleSpec | None = None
    features: Features = "cls"
    gather: bool = True

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "weight",
            lambda spec, _: (spec.weight is None) != (spec.scheduler is None),
            "give exactly one of weight (a constant) or scheduler (a schedule)",
            lambda spec, _: NO_VALUE,
        ),
        Rule("features", lambda spec, ctx: not outside(spec.features, ctx.get("depth")), blocks_text),
    )

    @property
    def schedule(self) -> ScheduleSpec:
        """The weight's schedule (validation makes a constant ``weight`` one)."""
        assert self.scheduler is not None
        return self.scheduler

    @model_validator(mode="after")
    def _normalised(self, info: ValidationInfo) -> RegularizerSpec:
        if self.weight is not None:
            self.scheduler, self.weight = ConstantWeight(weight=self.weight), None
        if isinstance(self.features, int):
            self.features = normalise_block(self.features, (info.context or {}).get("depth"))
        return self


def feature_of(out: Mapping, features: str | int, block_positions: Mapping[int, int]) -> torch.Tensor:
    """The (N, D) features named ``features`` from one training pass's outputs."""
    if features == "cls":
        return out["tokens"][:, 0]
    if features == "mean":
        return out["tokens"][:, 1:].mean(dim=1)
    return out["blocks"][block_positions[cast(int, features)]][:, 1:].mean(dim=1)  # a block index


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


class Regularizer(ABC):
    """Subclasses set ``name`` and ``Spec`` (their declared block) and implement ``__call__``."""

    name: str = ""
    Spec: ClassVar[type[RegularizerSpec]] = RegularizerSpec

    def __init__(self, spec: RegularizerSpec | Mapping[str, Any]):
        if not isinstance(spec, RegularizerSpec):  # a stored block (args.json, a checkpoint)
            spec = self.Spec.model_validate(plain(spec))
        self.spec = spec.model_dump()
        self.schedule: WeightSchedule = spec.schedule
        self.per_step = spec.schedule.interval == "step"
        self.features = spec.features
        self.gather = spec.gather

    def weight(self, step: int, epoch: int, epoch_fraction: float) -> float:
        return self.schedule(step, epoch + epoch_fraction if self.per_step else epoch)

    def blocks(self) -> set[int]:
        """Block indices whose outputs this regularizer reads."""
        return {self.features} if isinstance(self.features, int) else set()

    def features_of(self, out: dict, block_positions: Mapping[int, int]) -> torch.Tensor:
        return regularized_features(out, self.features, block_positions, self.gather)

    @abstractmethod
    def __call__(self, out: Mapping, block_positions: Mapping[int, int]) -> tuple[torch.Tensor, dict]:
        """(raw loss, extra values to log) for one large crop."""
