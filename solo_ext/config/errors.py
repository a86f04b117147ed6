"""The config layer's error, and how a declared model's validation error becomes one line.

Every message reads ``<key as the user wrote it>=<value!r>: <what is allowed>`` (or ``<key>:
<what is wrong>`` when there is no value), at most about 200 characters, so a user sees at once
what to fix. Entry points print it without a traceback and exit with code 2, before anything is
written to disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from solo_ext.utils.declared import did_you_mean, plain
from solo_ext.utils.errors import NO_VALUE, FieldError, UserError

_MAX_VALUE = 60
_MAX_LINE = 200


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message is one line naming the key, the value and
    what is allowed, e.g. ``method_kwargs.mask_ratio=1.5: must be < 1``."""


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    """The one-line error for ``key`` (``value`` may be NO_VALUE); raise what it returns."""
    return ConfigError(_line(key, value, allowed))


def _line(key: str, value: Any, allowed: str) -> str:
    shown = repr(value)
    # a long mapping or list is cut; a string (a path, a name) is shown whole
    if len(shown) > _MAX_VALUE and not isinstance(value, str):
        shown = shown[: _MAX_VALUE - 3] + "..."
    line = f"{key}: {allowed}" if value is NO_VALUE else f"{key}={shown}: {allowed}"
    if len(line) > _MAX_LINE and "; allowed: " in allowed:
        # too long with every allowed key listed: the near miss alone says what to write
        head, _, listing = allowed.partition("; allowed: ")
        hint = listing.partition("; ")[2]
        return _line(key, value, f"{head}; {hint}" if hint else head)
    return line


def _path(loc: Sequence, data: Any, missing: bool) -> tuple[list, Any]:
    """The part of pydantic's ``loc`` that is in the user's data (tags of tagged unions and
    validator names are pydantic's, not the user's), and the value found there."""
    parts, node = [], data
    for i, element in enumerate(loc):
        if isinstance(node, Mapping) and element in node:
            parts.append(element)
            node = node[element]
        elif isinstance(node, list | tuple) and isinstance(element, int) and 0 <= element < len(node):
            parts.append(element)
            node = node[element]
        elif missing and i == len(loc) - 1 and isinstance(node, Mapping):
            parts.append(element)
            node = NO_VALUE
    return parts, node


def _field_parts(field: str) -> list:
    """``"a.b[0]"`` -> ``["a", "b", 0]``."""
    parts: list = []
    for name in field.split("."):
        head, *indices = name.split("[")
        parts += [head] + [int(i.rstrip("]")) for i in indices]
    return [p for p in parts if p != ""]


def _user_value(node: Any, parts: Sequence, default: Any) -> Any:
    """The value the user wrote at ``parts`` under ``node`` (before any coercion), else ``default``."""
    for part in parts:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return default
    return node


def _key(prefix: str, parts: Sequence) -> str:
    key = prefix
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected) or [
        s.strip() for s in re.split(r",| or ", expected) if s.strip()
    ]


_TYPES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "finite_number": "must be finite",
    "none_required": "must be null",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _allowed(error: Mapping[str, Any]) -> tuple[str, Any, str]:
    """(what is allowed, the value to show, a suffix to the key) for one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input", NO_VALUE)
    if kind == "value_error" and isinstance(ctx.get("error"), FieldError):
        field_error = ctx["error"]
        return field_error.allowed, field_error.value, field_error.field
    if kind == "literal_error":
        choices = _choices(ctx["expected"])
        return f"must be one of {', '.join(choices)}{did_you_mean(value, choices)}", value, ""
    if kind == "tagged_block":  # a block told apart by its name; the message lists the names
        names = error["msg"].split(", ")
        if not isinstance(value, Mapping):
            return f"must be a mapping with a name, one of {error['msg']}", value, ""
        if "name" not in value:
            return f"missing; allowed: {error['msg']}", NO_VALUE, "name"
        return f"must be one of {error['msg']}{did_you_mean(value['name'], names)}", value["name"], "name"
    if kind == "missing":
        return "missing", NO_VALUE, ""
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"must be {_BOUNDS[kind]} {bound}", value, ""
    if kind == "too_short":
        return f"must hold at least {ctx['min_length']} item(s)", value, ""
    if kind == "too_long":
        return f"must hold at most {ctx['max_length']} item(s)", value, ""
    if kind in _TYPES:
        return _TYPES[kind], value, ""
    if kind == "value_error":
        return str(ctx.get("error", error["msg"])), value, ""
    return error["msg"], value, ""


def from_validation_error(
    err: ValidationError, data: Any, prefix: str = "", renames: Mapping[str, str] | None = None
) -> ConfigError:
    """One line for the first thing wrong in ``data`` (what was validated), named under
    ``prefix`` and, where the compatibility pass rewrote a key, under the user's name for it
    (``renames``: rewritten key -> the user's key)."""
    errors = err.errors(include_url=False)
    located = []
    for error in errors:
        parts, node = _path(error["loc"], data, error["type"] == "missing")
        allowed, value, suffix = _allowed(error)
        if suffix:  # a field named by a validator: show what the user wrote there
            value = _user_value(node, _field_parts(suffix), value)
        last = error["loc"][-1] if error["loc"] else None
        if error["type"] == "missing" and isinstance(last, int) and isinstance(node, list | tuple):
            allowed, value = f"has no item [{last}]", node
        extra = _field_parts(suffix) if suffix else []
        if extra and parts and parts[-1] == extra[0]:  # a field validator names its own field
            extra = extra[1:]
        located.append((_key(prefix, [*parts, *extra]), value, allowed))
    key, value, allowed = located[0]
    # a union reports one error per member at the same key: say what each member allows
    others = [a for k, _, a in located[1:] if k == key and a != allowed]
    if others:
        allowed = ", or ".join([allowed, *(a.removeprefix("must be ") for a in others)])
    for rewritten, user_key in (renames or {}).items():
        if key == rewritten or key.startswith((f"{rewritten}.", f"{rewritten}[")):
            key = user_key + key[len(rewritten) :]
            break
    return ConfigError(_line(key, value, allowed))


def validate(
    model: type[BaseModel] | TypeAdapter,
    data: Any,
    prefix: str = "",
    context: Mapping[str, Any] | None = None,
    renames: Mapping[str, str] | None = None,
) -> Any:
    """``model`` (a declared model or a TypeAdapter) validated from ``data``; a
    :class:`ConfigError` (one line) if it is invalid."""
    data = plain(data)
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data, context=context)
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise from_validation_error(err, data, prefix, renames) from None
