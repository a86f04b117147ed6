"""Errors that stop a run at start-up with one readable line."""


class ConfigError(ValueError):
    """A configuration value is invalid.

    The message is one line naming the key, the value and what is allowed, e.g.
    ``method_kwargs.mask_ratio=1.5: must be in [0, 1)``. Entry points print it without a
    traceback and exit with code 2, before anything is written to disk.
    """


class DataError(RuntimeError):
    """A dataset is missing, unreadable or cannot be downloaded."""


class NonFiniteLossError(FloatingPointError):
    """A loss component became NaN or inf; the message names it and the step."""
