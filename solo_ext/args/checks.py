"""Small checks that turn a bad config value into a one-line ``ConfigError``.

Every message reads ``<key>=<value!r>: <what is allowed>`` so a user sees at once what to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from solo_ext.utils.errors import ConfigError


def suggestion(value: Any, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when ``value`` is a near miss of one of ``valid``, else ``""``."""
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(key: str, value: Any, valid: Iterable[str]) -> str:
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(valid)}{suggestion(value, valid)}")
    return value


def check_keys(key: str, section: Mapping, allowed: Iterable[str]) -> None:
    """Reject keys of ``section`` that are not in ``allowed`` (solo-learn silently ignored them)."""
    allowed = sorted(allowed)
    for name in section:
        if name not in allowed:
            prefix = f"{key}." if key else ""
            # a short list is shown; a long one (the top level holds every Trainer argument)
            # would make a 400-character line, so only the near miss is named
            listing = f"; allowed: {', '.join(allowed)}" if len(allowed) <= 12 else ""
            hint = suggestion(name, allowed)
            if not listing and not hint:
                hint = f"; not one of the {len(allowed)} keys of {key or 'the top level'} (README lists them)"
            raise ConfigError(f"{prefix}{name}: unknown key{listing}{hint}")


def check_number(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> float | int:
    """Check a number's type and range; bools are refused (YAML ``yes`` is not a learning rate)."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{key}={value!r}: must be {kind}{_range_text(low, high, low_open, high_open)}")
    if value != value:  # NaN
        raise ConfigError(f"{key}={value!r}: must be {kind}, not NaN")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ConfigError(f"{key}={value!r}: must be {kind}{_range_text(low, high, low_open, high_open)}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: must be true or false")
    return value


def _range_text(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
