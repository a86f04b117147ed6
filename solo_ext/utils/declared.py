"""The base of every declared config model (pydantic v2): strict types, unknown keys refused.

Strict: YAML's ``yes`` is not a learning rate and ``"1e-3"`` (a string to YAML 1.1) is not a
number; ints are accepted where floats are expected. Unknown keys are refused here, with the
near miss named, rather than by pydantic's ``extra="forbid"``, whose message cannot say which
keys exist. ``ignored`` lists keys other projects' recipes carry that are accepted and dropped.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from solo_ext.utils.errors import FieldError


def _list_as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# a YAML list where the model keeps a tuple (strict mode takes only tuples as tuples)
FROM_LIST = BeforeValidator(_list_as_tuple)


def plain(node: Any) -> Any:
    """An OmegaConf node as plain dicts and lists (anything else unchanged), for validation."""
    if hasattr(node, "_metadata"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    return node


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


class NumberRange(NamedTuple):
    """What :func:`number_in` accepts (``"in [0, 1)"``, ``">= 1"``), kept in its ``Annotated``
    metadata for readers of the schema (the config reference, solo_ext.config.reference);
    pydantic ignores it."""

    text: str


def number_in(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Any:
    """A finite number (an int when ``integer``) in a range, refused with the whole range named:
    ``must be a number in [0, 1)`` rather than pydantic's one violated bound."""
    bounds = _range_text(low, high, low_open, high_open)
    allowed = f"must be {'an integer' if integer else 'a number'}{bounds}"

    def inside(value: float) -> float:
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        if not (above and below):
            raise ValueError(allowed)
        return value

    base = int if integer else Annotated[float, Field(allow_inf_nan=False)]
    return Annotated[base, AfterValidator(inside), NumberRange(bounds.strip())]


# the ranged numbers every declared block uses
if TYPE_CHECKING:  # the type checker sees the number; pydantic, below, its checked range
    PositiveInt = int
    NonNegativeInt = int
    Positive = float
    NonNegative = float
    UnitInterval = float
    BelowOne = float
    OpenUnitInterval = float
    SampleCount = int
    ImageCount = int
else:
    PositiveInt = number_in(1, integer=True)
    NonNegativeInt = number_in(0, integer=True)
    Positive = number_in(0, low_open=True)
    NonNegative = number_in(0)
    UnitInterval = number_in(0, 1)
    BelowOne = number_in(0, 1, high_open=True)
    OpenUnitInterval = number_in(0, 1, low_open=True, high_open=True)
    SampleCount = number_in(2, integer=True)
    ImageCount = number_in(1, 64, integer=True)
# a name or path: any non-empty string
Name = Annotated[str, Field(min_length=1)]


def did_you_mean(value: Any, valid: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` when ``value`` is a near miss of one of ``valid``, else ``""``."""
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key_text(name: str, allowed: Iterable[str], where: str) -> str:
    """What to say about an unknown key: the near miss, and the allowed keys when they are few
    (the top level holds every Trainer argument: listing them would make a 400-character line)."""
    allowed = sorted(allowed)
    hint = did_you_mean(name, allowed)
    if len(allowed) <= 12:
        return f"unknown key; allowed: {', '.join(allowed)}{hint}"
    listing = f"; not one of the {len(allowed)} keys of {where} (docs/config.md lists them)"
    return f"unknown key{hint or listing}"


class Rule(NamedTuple):
    """A rule across a declared model's fields, checked after its fields (on the values as given,
    before any normalising validator of the model): when ``holds(model, context)`` is False the
    error names ``field`` (relative to the model), the value (``value``, else the field's) and
    ``allowed``; each of these may be a function of (model, context)."""

    field: str | Callable[[Any, Mapping], str]
    holds: Callable[[Any, Mapping], bool]
    allowed: str | Callable[[Any, Mapping], str]
    value: Callable[[Any, Mapping], Any] | None = None


def _field_value(model: Any, field: str) -> Any:
    node = model
    for part in field.replace("]", "").replace("[", ".").split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


class Declared(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)

    ignored: ClassVar[frozenset[str]] = frozenset()
    # what unknown_key_text calls this section when it has too many keys to list
    where: ClassVar[str] = "this section"
    # the model's cross-field rules, each stated once
    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def accepted_keys(cls) -> set[str]:
        return set(cls.model_fields) | set(cls.ignored)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        accepted = cls.accepted_keys()
        for name in data:
            if name not in accepted:
                raise FieldError(str(name), data[name], unknown_key_text(str(name), accepted, cls.where))
        return {key: value for key, value in data.items() if key not in cls.ignored}

    @model_validator(mode="after")
    def _rules_hold(self, info: ValidationInfo) -> Any:
        context = info.context or {}
        for rule in type(self).rules:
            if not rule.holds(self, context):
                field = rule.field if isinstance(rule.field, str) else rule.field(self, context)
                value = rule.value(self, context) if rule.value else _field_value(self, field)
                allowed = rule.allowed if isinstance(rule.allowed, str) else rule.allowed(self, context)
                raise FieldError(field, value, allowed)
        return self
