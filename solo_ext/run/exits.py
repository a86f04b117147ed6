"""The one place a user's error becomes an exit code: its one line on stderr, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from solo_ext.utils.errors import UserError


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Run the block; a :class:`~solo_ext.utils.errors.UserError` (a config value, data, a
    checkpoint, an export or report input: exit code 2; a NaN/inf loss: 3) prints ``error: <its
    line>`` and exits with its code. Anything else is a bug and keeps its traceback."""
    try:
        yield
    except UserError as err:
        print(f"{err.prefix}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
