"""Regularizer weight schedules: stateless maps (global step, epoch) -> weight.

Each schedule is a frozen, declared (pydantic) model called as ``schedule(step, epoch)`` and
returning a Python float. The epoch may be fractional (global_step / steps_per_epoch) for
per-step schedules; all the schedules here are defined on the epoch axis, and ``step`` is part
of the signature so that every schedule, present or future, is called the same way. Being pure
functions of their arguments, they give the same weights after a resume.

The names and parameters are those of the MAGMA code (``reg_scheduler``) with its bugs fixed: the
``step`` schedule no longer mutates itself or pops from the config list, its 5-epoch warm-up is a
parameter, and the ``interval`` schedule needs no max_epochs table (MAGMA's table fails to build
for an interval ending after max_epochs, and its guard ``epoch > max_epochs``, meant as ``>=``,
lets epoch == max_epochs index past it). ``linear`` and ``cosine`` ramps are added.

Each schedule declares its parameters once, as typed fields (epochs >= 0, weights finite, epochs
in order); invalid ones raise pydantic's ValidationError, which the config layer words as one line
under the user's key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, Union, cast

from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator

from solo_ext.utils.declared import FROM_LIST, Declared, Rule, number_in, plain

# an epoch on the schedule's axis: finite and >= 0; a weight: any finite number
if TYPE_CHECKING:  # the type checker sees the number; pydantic, below, its checked range
    Epoch = float
else:
    Epoch = number_in(0)
Weight = Annotated[float, Field(allow_inf_nan=False)]


class WeightSchedule(Protocol):
    def __call__(self, step: int, epoch: float) -> float: ...


def _lerp(start: float, end: float, fraction: float) -> float:
    return start + (end - start) * fraction


def in_order(*names: str) -> tuple[Rule, ...]:
    """Rules keeping the epochs ``names`` in order, each naming the epoch that breaks it."""
    chain = " <= ".join(names)

    def rule(before: str, name: str) -> Rule:
        return Rule(
            name,
            lambda s, _: getattr(s, before) <= getattr(s, name),
            lambda s, _: f"must satisfy {chain}, but {before}={getattr(s, before):g}",
        )

    return tuple(rule(before, name) for before, name in zip(names, names[1:]))


def _first_empty(s: IntervalWeight) -> int | None:
    return next((i for i, (start, end, _) in enumerate(s.intervals) if start >= end), None)


def _by_start(s: IntervalWeight) -> list[int]:
    return sorted(range(len(s.intervals)), key=lambda i: s.intervals[i])


def _first_overlap(s: IntervalWeight) -> tuple[int, int] | None:
    order = _by_start(s)
    pairs = zip(order, order[1:])
    return next(((p, c) for p, c in pairs if s.intervals[c][0] < s.intervals[p][1]), None)


class _Schedule(Declared):
    """A frozen, declared schedule; ``interval`` says how the epoch is counted where it is used
    (``epoch``: whole epochs, ``step``: the fraction of the epoch included), not its shape."""

    model_config = {**Declared.model_config, "frozen": True}
    where: ClassVar[str] = "the schedule"

    interval: Literal["epoch", "step"] = "epoch"


class ConstantWeight(_Schedule):
    """``weight`` at every epoch."""

    name: Literal["constant"] = "constant"
    weight: Weight

    def __call__(self, step: int, epoch: float) -> float:
        return float(self.weight)


class WarmupWeight(_Schedule):
    """``base_weight`` before ``warmup_epochs``, then ``weight`` for ``reg_epochs`` epochs (None: for
    ever), then ``base_weight`` again."""

    name: Literal["warmup"] = "warmup"
    warmup_epochs: Epoch
    weight: Weight
    base_weight: Weight = 0.0
    reg_epochs: Epoch | None = None

    def __call__(self, step: int, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return float(self.base_weight)
        if self.reg_epochs is None or epoch < self.warmup_epochs + self.reg_epochs:
            return float(self.weight)
        return float(self.base_weight)


class TriangleWeight(_Schedule):
    """``start_weight`` before ``start_epoch``, linear to ``max_weight`` at ``mid_epoch``, linear to
    ``end_weight`` at ``end_epoch``, ``end_weight`` from then on. Equal epochs make a jump."""

    name: Literal["triangle"] = "triangle"
    start_weight: Weight
    max_weight: Weight
    end_weight: Weight
    start_epoch: Epoch
    mid_epoch: Epoch
    end_epoch: Epoch

    rules: ClassVar = in_order("start_epoch", "mid_epoch", "end_epoch")

    def __call__(self, step: int, epoch: float) -> float:
        # each branch is reached only when its interval is non-empty, so no division by zero
        if epoch < self.start_epoch:
            return float(self.start_weight)
        if epoch < self.mid_epoch:
            fraction = (epoch - self.start_epoch) / (self.mid_epoch - self.start_epoch)
            return _lerp(self.start_weight, self.max_weight, fraction)
        if epoch < self.end_epoch:
            fraction = (epoch - self.mid_epoch) / (self.end_epoch - self.mid_epoch)
            return _lerp(self.max_weight, self.end_weight, fraction)
        return float(self.end_weight)


class StepWeight(_Schedule):
    """0 before ``warmup_epochs``, then ``weight · scale**k`` with k the number of milestones in
    ``steps`` that are <= epoch."""

    name: Literal["step"] = "step"
    weight: Weight
    steps: Annotated[tuple[Epoch, ...], FROM_LIST]
    scale: Weight = 0.1
    warmup_epochs: Epoch = 5.0

    rules: ClassVar = (
        Rule(
            "steps",
            lambda s, _: all(a < b for a, b in zip(s.steps, s.steps[1:])),
            "milestones must be strictly increasing",
        ),
    )

    def __call__(self, step: int, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return 0.0
        passed = sum(1 for milestone in self.steps if milestone <= epoch)
        return float(self.weight * self.scale**passed)


class IntervalWeight(_Schedule):
    """``weight`` for start <= epoch < end of each ``[start, end, weight]`` in ``intervals``, 0 elsewhere.

    Intervals must not overlap (touching is fine: [0, 5, a], [5, 10, b])."""

    name: Literal["interval"] = "interval"
    intervals: Annotated[
        tuple[Annotated[tuple[Epoch, Epoch, Weight], FROM_LIST], ...], FROM_LIST, Field(min_length=1)
    ]

    rules: ClassVar = (
        Rule(
            lambda s, _: f"intervals[{_first_empty(s)}]",
            lambda s, _: _first_empty(s) is None,
            "start must be < end (the end is exclusive)",
        ),
        Rule(
            "intervals",
            lambda s, _: _first_overlap(s) is None,
            lambda s, _: "intervals must not overlap, but intervals[{}] and intervals[{}] do".format(
                # the rule fails only where there is an overlap
                *cast(tuple[int, int], _first_overlap(s))
            ),
        ),
    )

    @model_validator(mode="after")
    def _sorted(self) -> IntervalWeight:
        # sorted by start; frozen models store through object.__setattr__
        object.__setattr__(self, "intervals", tuple(self.intervals[i] for i in _by_start(self)))
        return self

    def __call__(self, step: int, epoch: float) -> float:
        for start, end, weight in self.intervals:
            if start <= epoch < end:
                return float(weight)
        return 0.0


class _Ramp(_Schedule):
    """``start_weight`` before ``start_epoch``, ``end_weight`` from ``end_epoch`` on, and between them
    ``shape`` maps the fraction of the ramp done, in [0, 1), to the fraction of the change applied."""

    shape: ClassVar[Callable[[float], float]]

    start_weight: Weight
    end_weight: Weight
    end_epoch: Epoch
    start_epoch: Epoch = 0.0

    rules: ClassVar = in_order("start_epoch", "end_epoch")

    def __call__(self, step: int, epoch: float) -> float:
        if epoch >= self.end_epoch:
            return float(self.end_weight)
        if epoch < self.start_epoch:
            return float(self.start_weight)
        fraction = (epoch - self.start_epoch) / (self.end_epoch - self.start_epoch)
        return _lerp(self.start_weight, self.end_weight, type(self).shape(fraction))


class LinearWeight(_Ramp):
    """Linear ramp from ``start_weight`` at ``start_epoch`` to ``end_weight`` at ``end_epoch``."""

    name: Literal["linear"] = "linear"
    shape: ClassVar[Callable[[float], float]] = staticmethod(lambda fraction: fraction)


class CosineWeight(_Ramp):
    """Half-cosine ramp from ``start_weight`` at ``start_epoch`` to ``end_weight`` at ``end_epoch``
    (flat at both ends)."""

    name: Literal["cosine"] = "cosine"
    shape: ClassVar[Callable[[float], float]] = staticmethod(
        lambda fraction: (1 - math.cos(math.pi * fraction)) / 2
    )


SCHEDULE_CLASSES = (
    ConstantWeight,
    WarmupWeight,
    TriangleWeight,
    StepWeight,
    IntervalWeight,
    LinearWeight,
    CosineWeight,
)
WEIGHT_SCHEDULES: dict[str, type[_Schedule]] = {
    cls.model_fields["name"].default: cls for cls in SCHEDULE_CLASSES
}


def _schedule_name(block: Any) -> str | None:
    return block.get("name") if isinstance(block, dict) else getattr(block, "name", None)


# A schedule block, told apart by its name (a tagged union).
if TYPE_CHECKING:  # the type checker sees the union of SCHEDULE_CLASSES; pydantic, below, the tagged union
    ScheduleSpec = (
        ConstantWeight
        | WarmupWeight
        | TriangleWeight
        | StepWeight
        | IntervalWeight
        | LinearWeight
        | CosineWeight
    )
else:
    ScheduleSpec = Annotated[
        Union[tuple(Annotated[cls, Tag(name)] for name, cls in WEIGHT_SCHEDULES.items())],  # noqa: UP007
        Discriminator(
            _schedule_name,
            # the config layer words this error with the names listed in the message
            custom_error_type="tagged_block",
            custom_error_message=", ".join(sorted(WEIGHT_SCHEDULES)),
        ),
    ]
SCHEDULE_SPEC: TypeAdapter[ScheduleSpec] = TypeAdapter(ScheduleSpec)


def build_weight_schedule(cfg: Mapping[str, Any]) -> WeightSchedule:
    """The schedule ``{name: ..., <parameters>}`` describes (a dict or an OmegaConf DictConfig,
    left unchanged).

    Raises:
        pydantic.ValidationError: unknown name or parameter, missing or ill-typed parameter,
            negative epoch, epochs out of order (``solo_ext.config`` words it as one line).
    """
    return SCHEDULE_SPEC.validate_python(plain(cfg))
