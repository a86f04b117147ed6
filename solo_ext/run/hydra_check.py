"""Hydra's composition errors as one line in the user's own words, before Hydra prints its own.

Hydra reports a key the recipe lacks, a recipe that does not exist or an override it cannot parse
in three or more lines ending with a hint about ``HYDRA_FULL_ERROR``, and exits with 1. The entry
points first compose the config once with Hydra's compose API (cheap, nothing written) and, if
that fails, print one line naming the override as written, what is wrong and what to write
instead (the ``++`` hint where it applies), and exit with 2 like every other config error.
Multiruns (``-m``) and Hydra's own flags (``--help``, ``--cfg``, ...) are left to Hydra.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from solo_ext.config.errors import ConfigError
from solo_ext.run.exits import exit_on_user_error
from solo_ext.utils.declared import did_you_mean as suggestion

if TYPE_CHECKING:
    from omegaconf import DictConfig

_NAME_FLAGS = ("--config-name", "-cn")
_PATH_FLAGS = ("--config-path", "-cp")


def split_argv(words: list[str], where: str = "command") -> tuple[str | None, str | None, list[str]]:
    """(``--config-path``, ``--config-name``, the ``key=value`` overrides) of a command line.

    Raises:
        ConfigError: a flag without its value, or another option.
    """
    config_path = config_name = None
    overrides: list[str] = []
    remaining = iter(words)
    for word in remaining:
        if not word.startswith("-"):
            overrides.append(word)
            continue
        flag, equals, value = word.partition("=")
        own = flag in _NAME_FLAGS + _PATH_FLAGS
        if own and not equals:
            value = next(remaining, "")
        if not (own and value):
            wrong = "is not followed by a value" if own else "is not a Hydra option main_pretrain.py takes"
            raise ConfigError(f"{where}: {word!r} {wrong}")
        if flag in _NAME_FLAGS:
            config_name = value
        else:
            config_path = value
    return config_path, config_name, overrides


def _written(overrides: list[str], key: str) -> str:
    """The override the user wrote for ``key`` (with its +/++/~ prefix), or ``key`` itself."""
    for override in overrides:
        if override.lstrip("+~").split("=", 1)[0] == key:
            return override
    return key


def one_line(err: Exception, config_name: str, config_dir: Path, overrides: list[str]) -> str:
    """Hydra's or OmegaConf's composition error as one line of at most ~200 characters."""
    from hydra.errors import OverrideParseException

    text = str(err)
    if isinstance(err, OverrideParseException):
        return (
            f"{err.override}: not a valid override ({text.strip().splitlines()[0]}); write key=value "
            "(++key=value adds a key the recipe lacks)"
        )
    missing = re.search(r"Could not override '([^']+)'", text)
    present = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    match = missing or present
    if match:
        key = match.group(1)
        written = _written(overrides, key)
        if missing:
            return (
                f"{written}: {key} is not a key of {config_name}; to add it, write "
                f"++{written.lstrip('+')} (Trainer arguments and keys a recipe leaves out need ++)"
            )
        value = written.split("=", 1)[1] if "=" in written else "..."
        return f"{written}: {key} is already in {config_name}; write {key}={value} to change it"
    if "Cannot find primary config" in text:
        recipes = sorted(p.name for p in config_dir.glob("*.yaml"))
        hint = suggestion(config_name, recipes) or f"; recipes there: {', '.join(recipes[:6])}"
        return f"--config-name={config_name!r}: no such recipe in {config_dir}{hint}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return first if len(first) <= 200 else first[:197] + "..."


def resolve_dir(config_path: str | None, default: Path, script_dir: Path) -> Path:
    """Where Hydra will look: ``--config-path`` (absolute, or relative to the working directory
    or to the script) or the entry point's default."""
    if config_path is None:
        return default
    path = Path(config_path).expanduser()
    if path.is_absolute():
        return path
    return path.resolve() if path.resolve().is_dir() else (script_dir / path).resolve()


def check_composition(argv: list[str], default_dir: Path, script_dir: Path) -> None:
    """Compose the config the command line asks for; on a composition error print one line and
    exit with 2. Leaves multiruns, Hydra's own flags and a missing --config-name to Hydra."""
    try:
        config_path, config_name, overrides = split_argv(list(argv))
    except ConfigError:
        return  # -m, --help, --cfg, ...: any option split_argv does not take is Hydra's
    if config_name is None:
        return
    with exit_on_user_error():
        compose_config(resolve_dir(config_path, default_dir, script_dir), config_name, overrides)


def compose_config(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose the config as main_pretrain.py would (nothing written); a composition error is a
    ConfigError of one line (see :func:`one_line`)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
            return compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(one_line(err, config_name, config_dir, overrides)) from None
