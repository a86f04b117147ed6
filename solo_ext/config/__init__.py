"""The config layer: the declared schema (``schema``), the compatibility pass for solo-learn's
and MAGMA's YAMLs (``compat``), one-line errors in the user's own words (``errors``), and the
parsers of the pretraining and linear-evaluation configs. Nothing below this layer imports it."""

from solo_ext.config.errors import ConfigError, fail, validate

__all__ = ["ConfigError", "fail", "validate"]
