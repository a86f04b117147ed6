"""The one place a user's error becomes an exit code: its one line on stderr, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from solo_ext.utils.errors import UserError


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Run the block; a :class:`~solo_ext.utils.errors.UserError` (a config value, data, a
    checkpoint, an export or report input: exit code 2; a NaN/inf loss: 3), raised here or in a
    data worker, prints ``error: <its line>`` and exits with its code. Anything else is a bug and
    keeps its traceback."""
    try:
        yield
    except UserError as err:
        print(f"{err.prefix}: {own_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)


def own_line(err: UserError) -> str:
    """The error's own line, also for one raised in a DataLoader worker process.

    torch re-raises a worker's error in the main process as the same type whose message is the
    worker's whole traceback (``Caught DataError in DataLoader worker process 0.`` then ``Original
    Traceback ...``), which ends with the line ``<module>.<type>: <the error's line>``.
    """
    text = str(err)
    last = text.rstrip("\n").rpartition("\n")[2]
    qualified = f"{type(err).__module__}.{type(err).__qualname__}: "
    return last.removeprefix(qualified) if "\n" in text and last.startswith(qualified) else text
