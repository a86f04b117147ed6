"""Errors every layer may raise (the config layer's own, ``ConfigError``, is in ``solo_ext.config``)."""

from collections.abc import Iterable
from typing import Any

# the value of a FieldError that names a key, not a value (e.g. "missing")
NO_VALUE = object()


def first_problem(checks: Iterable[tuple[object, str]]) -> str | None:
    """The message of the first ``(wrong, message)`` of ``checks`` whose ``wrong`` is truthy, or
    None: a reader lists its checks in the order a user should fix them and raises once."""
    return next((message for wrong, message in checks if wrong), None)


class UserError(Exception):
    """An error the user can fix (a config value, a path, a file): entry points print its one
    line without a traceback and exit with ``exit_code`` (see ``solo_ext.run.exits``)."""

    exit_code = 2
    prefix = "error"


class FieldError(ValueError):
    """A declared model's field holds a value it cannot take: ``field``, the ``value`` and what
    is ``allowed``. Raised inside pydantic validators; the config layer turns it into one line
    ``<the user's key>.<field>=<value!r>: <allowed>``."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        shown = "" if value is NO_VALUE else f"={value!r}"
        super().__init__(f"{field}{shown}: {allowed}")


class DataError(UserError, RuntimeError):
    """A dataset is missing, unreadable or cannot be downloaded."""


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss component became NaN or inf; the message names it and the step."""

    exit_code = 3


class Interrupted(UserError):
    """The run stopped on a signal after saving its state: exit 128 + the signal's number."""

    prefix = "stopped"

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
