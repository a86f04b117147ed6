"""Regularizer weight schedules: stateless maps (global step, epoch) -> weight.

Each schedule is a frozen dataclass called as ``schedule(step, epoch)`` and returning a Python
float. The epoch may be fractional (global_step / steps_per_epoch) for per-step schedules; all the
schedules here are defined on the epoch axis, and ``step`` is part of the signature so that every
schedule, present or future, is called the same way. Being pure functions of their arguments, they
give the same weights after a resume.

The names and parameters are those of the MAGMA code (``reg_scheduler``) with its bugs fixed: the
``step`` schedule no longer mutates itself or pops from the config list, its 5-epoch warm-up is a
parameter, and the ``interval`` schedule needs no max_epochs table (MAGMA's table fails to build
for an interval ending after max_epochs, and its guard ``epoch > max_epochs``, meant as ``>=``,
lets epoch == max_epochs index past it). ``linear`` and ``cosine`` ramps are added.

Invalid parameters raise :class:`~solo_ext.utils.errors.ConfigError` with one line
``<param>=<value!r>: <what is allowed>``; :func:`build_weight_schedule` prefixes the config key.
"""

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar, Protocol

from solo_ext.utils.errors import ConfigError


class WeightSchedule(Protocol):
    def __call__(self, step: int, epoch: float) -> float: ...


def _number(param: str, value: Any, *, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{param}={value!r}: must be a number (int or float), not {type(value).__name__}")
    if not math.isfinite(value):
        raise ConfigError(f"{param}={value!r}: must be finite")
    if non_negative and value < 0:
        raise ConfigError(f"{param}={value!r}: must be >= 0")
    return float(value)


def _epoch(param: str, value: Any) -> float:
    return _number(param, value, non_negative=True)


def _sequence(param: str, value: Any) -> Sequence:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(f"{param}={value!r}: must be a list, not {type(value).__name__}")
    return value


def _ordered(names: Sequence[str], values: Sequence[Real]) -> None:
    """Raise unless values (already checked to be numbers) are non-decreasing, naming the first
    parameter that breaks the order."""
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            chain = " <= ".join(names)
            raise ConfigError(
                f"{names[i]}={values[i]!r}: must satisfy {chain}, but {names[i - 1]}={values[i - 1]!r}"
            )


def _lerp(start: float, end: float, fraction: float) -> float:
    return start + (end - start) * fraction


def _set(schedule: object, **values: Any) -> None:
    # frozen dataclasses store their normalised fields through object.__setattr__
    for name, value in values.items():
        object.__setattr__(schedule, name, value)


@dataclass(frozen=True)
class ConstantWeight:
    """``weight`` at every epoch."""

    weight: float

    def __post_init__(self) -> None:
        _set(self, weight=_number("weight", self.weight))

    def __call__(self, step: int, epoch: float) -> float:
        return self.weight


@dataclass(frozen=True)
class WarmupWeight:
    """``base_weight`` before ``warmup_epochs``, then ``weight`` for ``reg_epochs`` epochs (None: for
    ever), then ``base_weight`` again."""

    warmup_epochs: float
    weight: float
    base_weight: float = 0.0
    reg_epochs: float | None = None

    def __post_init__(self) -> None:
        _set(
            self,
            warmup_epochs=_epoch("warmup_epochs", self.warmup_epochs),
            weight=_number("weight", self.weight),
            base_weight=_number("base_weight", self.base_weight),
        )
        if self.reg_epochs is not None:
            _set(self, reg_epochs=_epoch("reg_epochs", self.reg_epochs))

    def __call__(self, step: int, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return self.base_weight
        if self.reg_epochs is None or epoch < self.warmup_epochs + self.reg_epochs:
            return self.weight
        return self.base_weight


@dataclass(frozen=True)
class TriangleWeight:
    """``start_weight`` before ``start_epoch``, linear to ``max_weight`` at ``mid_epoch``, linear to
    ``end_weight`` at ``end_epoch``, ``end_weight`` from then on. Equal epochs make a jump."""

    start_weight: float
    max_weight: float
    end_weight: float
    start_epoch: float
    mid_epoch: float
    end_epoch: float

    def __post_init__(self) -> None:
        names = ("start_epoch", "mid_epoch", "end_epoch")
        epochs = [_epoch(name, getattr(self, name)) for name in names]
        _ordered(names, [getattr(self, name) for name in names])
        _set(self, **dict(zip(names, epochs)))
        for name in ("start_weight", "max_weight", "end_weight"):
            _set(self, **{name: _number(name, getattr(self, name))})

    def __call__(self, step: int, epoch: float) -> float:
        # each branch is reached only when its interval is non-empty, so no division by zero
        if epoch < self.start_epoch:
            return self.start_weight
        if epoch < self.mid_epoch:
            fraction = (epoch - self.start_epoch) / (self.mid_epoch - self.start_epoch)
            return _lerp(self.start_weight, self.max_weight, fraction)
        if epoch < self.end_epoch:
            fraction = (epoch - self.mid_epoch) / (self.end_epoch - self.mid_epoch)
            return _lerp(self.max_weight, self.end_weight, fraction)
        return self.end_weight


@dataclass(frozen=True)
class StepWeight:
    """0 before ``warmup_epochs``, then ``weight · scale**k`` with k the number of milestones in
    ``steps`` that are <= epoch."""

    weight: float
    steps: tuple[float, ...]
    scale: float = 0.1
    warmup_epochs: float = 5.0

    def __post_init__(self) -> None:
        given = list(_sequence("steps", self.steps))
        steps = tuple(_epoch(f"steps[{i}]", s) for i, s in enumerate(given))
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                raise ConfigError(f"steps={given!r}: milestones must be strictly increasing")
        _set(
            self,
            weight=_number("weight", self.weight),
            steps=steps,
            scale=_number("scale", self.scale),
            warmup_epochs=_epoch("warmup_epochs", self.warmup_epochs),
        )

    def __call__(self, step: int, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return 0.0
        passed = sum(1 for milestone in self.steps if milestone <= epoch)
        return self.weight * self.scale**passed


@dataclass(frozen=True)
class IntervalWeight:
    """``weight`` for start <= epoch < end of each ``[start, end, weight]`` in ``intervals``, 0 elsewhere.

    Intervals must not overlap (touching is fine: [0, 5, a], [5, 10, b])."""

    intervals: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        given = [
            list(_sequence(f"intervals[{i}]", interval))
            for i, interval in enumerate(_sequence("intervals", self.intervals))
        ]
        if not given:
            raise ConfigError("intervals=[]: must list at least one [start, end, weight]")
        parsed = []
        for i, interval in enumerate(given):
            param = f"intervals[{i}]"
            if len(interval) != 3:
                raise ConfigError(f"{param}={interval!r}: must be [start, end, weight]")
            start = _epoch(f"{param}[0]", interval[0])
            end = _epoch(f"{param}[1]", interval[1])
            weight = _number(f"{param}[2]", interval[2])
            if start >= end:
                raise ConfigError(f"{param}={interval!r}: start must be < end (the end is exclusive)")
            parsed.append((start, end, weight))
        ordered = sorted(range(len(parsed)), key=lambda i: parsed[i])
        for previous, current in zip(ordered, ordered[1:]):
            if parsed[current][0] < parsed[previous][1]:
                raise ConfigError(
                    f"intervals={given!r}: intervals must not overlap, "
                    f"but intervals[{previous}] and intervals[{current}] do"
                )
        _set(self, intervals=tuple(parsed[i] for i in ordered))

    def __call__(self, step: int, epoch: float) -> float:
        for start, end, weight in self.intervals:
            if start <= epoch < end:
                return weight
        return 0.0


@dataclass(frozen=True)
class _Ramp:
    """``start_weight`` before ``start_epoch``, ``end_weight`` from ``end_epoch`` on, and between them
    ``shape`` maps the fraction of the ramp done, in [0, 1), to the fraction of the change applied."""

    shape: ClassVar[Callable[[float], float]]

    start_weight: float
    end_weight: float
    end_epoch: float
    start_epoch: float = 0.0

    def __post_init__(self) -> None:
        epochs = (_epoch("start_epoch", self.start_epoch), _epoch("end_epoch", self.end_epoch))
        _ordered(("start_epoch", "end_epoch"), (self.start_epoch, self.end_epoch))
        _set(
            self,
            start_weight=_number("start_weight", self.start_weight),
            end_weight=_number("end_weight", self.end_weight),
            start_epoch=epochs[0],
            end_epoch=epochs[1],
        )

    def __call__(self, step: int, epoch: float) -> float:
        if epoch >= self.end_epoch:
            return self.end_weight
        if epoch < self.start_epoch:
            return self.start_weight
        fraction = (epoch - self.start_epoch) / (self.end_epoch - self.start_epoch)
        return _lerp(self.start_weight, self.end_weight, self.shape(fraction))


@dataclass(frozen=True)
class LinearWeight(_Ramp):
    """Linear ramp from ``start_weight`` at ``start_epoch`` to ``end_weight`` at ``end_epoch``."""

    shape = staticmethod(lambda fraction: fraction)


@dataclass(frozen=True)
class CosineWeight(_Ramp):
    """Half-cosine ramp from ``start_weight`` at ``start_epoch`` to ``end_weight`` at ``end_epoch``
    (flat at both ends)."""

    shape = staticmethod(lambda fraction: (1 - math.cos(math.pi * fraction)) / 2)


WEIGHT_SCHEDULES: dict[str, type] = {
    "constant": ConstantWeight,
    "warmup": WarmupWeight,
    "triangle": TriangleWeight,
    "step": StepWeight,
    "interval": IntervalWeight,
    "linear": LinearWeight,
    "cosine": CosineWeight,
}


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def build_weight_schedule(cfg: Mapping, key: str) -> WeightSchedule:
    """Build a schedule from ``{name: ..., <parameters>}``; ``cfg`` is not modified.

    Args:
        cfg: mapping (a dict or an OmegaConf DictConfig) with ``name`` in :data:`WEIGHT_SCHEDULES`
            and that schedule's parameters.
        key: config path of ``cfg`` for error messages, e.g. ``"method_kwargs.reg_scheduler"``.

    Raises:
        ConfigError: one line ``<key>.<param>=<value!r>: <what is allowed>`` for an unknown name or
            parameter, a missing required parameter, a wrong type, a negative epoch or epochs out of order.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{key}={cfg!r}: must be a mapping with a name and the schedule's parameters")
    names = sorted(WEIGHT_SCHEDULES)
    if "name" not in cfg:
        raise ConfigError(f"{key}.name: missing; allowed: {', '.join(names)}")
    name = cfg["name"]
    if not isinstance(name, str) or name not in WEIGHT_SCHEDULES:
        hint = _did_you_mean(name, names) if isinstance(name, str) else ""
        raise ConfigError(f"{key}.name={name!r}: unknown weight schedule; allowed: {', '.join(names)}{hint}")
    cls = WEIGHT_SCHEDULES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    params = {param: value for param, value in cfg.items() if param != "name"}
    for param, value in params.items():
        if param not in fields:
            allowed = ", ".join(sorted(fields))
            hint = _did_you_mean(str(param), sorted(fields))
            raise ConfigError(
                f"{key}.{param}={value!r}: unknown parameter of the {name!r} schedule; "
                f"allowed: {allowed}{hint}"
            )
    for param, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and param not in params:
            raise ConfigError(f"{key}.{param}: missing; the {name!r} schedule requires {param}")
    try:
        return cls(**params)
    except ConfigError as err:
        raise ConfigError(f"{key}.{err}") from None
