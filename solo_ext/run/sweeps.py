"""Dry-run a wandb sweep file: every point it can launch, composed and validated, nothing trained.

A wandb agent launches ``main_pretrain.py`` with the sweep's ``command``, in which
``${args_no_hyphens}`` becomes one ``key=value`` argument per swept parameter, the value written
as Python's ``str`` writes it (``0.01``, ``True``, ``[2, 4]``). A key that is not in the base
config, or a value that ``parse_cfg`` rejects, only shows up when the agent's run crashes: hours
later on a cluster, once per trial. :func:`dry_run` renders the same arguments for a finite set
of points and runs Hydra's composition and :func:`solo_ext.config.pretrain.parse_cfg` on each:

- ``grid``: the cartesian product of the ``values`` lists (wandb's own grid);
- ``random``/``bayes``: ``values`` lists enumerated, ranges (``min``/``max``) tried at their
  minimum, middle and maximum (the geometric middle for log-uniform ones), then the product.
"""

from __future__ import annotations

import itertools
import math
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from solo_ext.config.errors import ConfigError, fail, validate
from solo_ext.config.pretrain import parse_cfg
from solo_ext.config.schema import LOG_EXPONENT_RANGES, LOG_VALUE_RANGES, SweepFile, SweepParameter
from solo_ext.run.hydra_check import compose_config, split_argv
from solo_ext.utils.errors import NO_VALUE, DataError

REPO = Path(__file__).resolve().parents[2]
# The config_path that main_pretrain.py's @hydra.main uses when no --config-path is given.
DEFAULT_CONFIG_DIR = REPO / "scripts" / "pretrain" / "digits"


def load_sweep(path: str | Path) -> dict:
    """The sweep file as a dict, checked against :class:`~solo_ext.config.schema.SweepFile`
    (``ConfigError`` otherwise)."""
    try:
        with open(path) as f:
            sweep = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable YAML file ({' '.join(str(err).split())})") from err
    validate(
        SweepFile,
        sweep,
        "",
        context={"method": (sweep or {}).get("method")} if isinstance(sweep, dict) else {},
    )
    return sweep


def fixed_arguments(sweep: dict) -> tuple[str | None, str | None, list[str]]:
    """(``--config-path``, ``--config-name``, the fixed ``key=value`` overrides) of the command;
    the ``${...}`` macros (env, interpreter, program, args) are the agent's to fill."""
    return split_argv([str(w) for w in sweep["command"] if not str(w).startswith("${")])


def parameter_values(key: str, spec: Any, method: str) -> list[Any]:
    """The values of one swept parameter that the dry run tries: its ``value``, its ``values``, or
    a range (``min``/``max``) at its minimum, middle and maximum (the geometric middle for
    log-uniform ones; wandb's ``log_uniform`` takes natural-log exponents)."""
    parameter = validate(SweepParameter, spec, f"parameters.{key}", context={"method": method})
    if "value" in parameter.model_fields_set:
        return [parameter.value]
    if parameter.values is not None:
        return parameter.values
    low, high = parameter.min, parameter.max
    distribution = parameter.range_distribution()
    if distribution in LOG_VALUE_RANGES:
        points = [low, math.sqrt(low * high), high]
    elif distribution in LOG_EXPONENT_RANGES:  # min/max are natural-log exponents
        points = [math.exp(low), math.exp((low + high) / 2), math.exp(high)]
    else:
        points = [low, (low + high) / 2, high]
    if distribution == "int_uniform" or (distribution.startswith("q_") and parameter.integer_range()):
        points = [round(p) for p in points]
    return list(dict.fromkeys(points))  # an empty or integer range repeats its middle


def render_argument(key: str, value: Any) -> str:
    """One ``${args_no_hyphens}`` word, written as the wandb agent writes it (``f"{key}={value}"``)."""
    return f"{key}={value}"


def sweep_points(sweep: dict) -> Iterator[list[str]]:
    """The swept ``key=value`` words of every point, in the order of the parameters."""
    keys = list(sweep["parameters"])
    values = [parameter_values(key, sweep["parameters"][key], sweep["method"]) for key in keys]
    for point in itertools.product(*values):
        yield [render_argument(key, value) for key, value in zip(keys, point, strict=True)]


def resolve_config_dir(config_path: str | None) -> Path:
    """As main_pretrain.py reads ``--config-path``: absolute, or relative to its folder."""
    if config_path is None:
        return DEFAULT_CONFIG_DIR
    path = Path(config_path).expanduser()
    return path if path.is_absolute() else (REPO / path).resolve()


def check_point(config_dir: Path, config_name: str, overrides: list[str]) -> None:
    """Compose the config as main_pretrain.py would and validate it; ``ConfigError`` (one line) if
    Hydra refuses an override or parse_cfg a value."""
    parse_cfg(compose_config(config_dir, config_name, overrides))


def dry_run(
    sweep_file: str | Path,
    config_path: str | None = None,
    max_points: int | None = None,
    echo: Callable[[str], None] = print,
    extra: list[str] | None = None,
) -> int:
    """Print every point's command line and ``OK`` or its error; return how many points failed.

    ``config_path`` overrides the command's ``--config-path``; ``max_points`` stops after that many;
    ``extra`` overrides are added to every point when checking it (not to the printed command),
    e.g. ``accelerator=cpu`` to check a GPU sweep on a machine without one.
    """
    sweep = load_sweep(sweep_file)
    command_path, config_name, fixed = fixed_arguments(sweep)
    config_dir = resolve_config_dir(config_path or command_path)
    if config_name is None or not (config_dir / config_name).is_file():
        where = (
            f"no such file in {config_dir}"
            if config_name
            else "missing from command; main_pretrain.py needs one"
        )
        raise fail("--config-name", config_name or NO_VALUE, where)
    program = sweep.get("program", "main_pretrain.py")
    head = ["python", program]
    if command_path is not None:
        head += ["--config-path", command_path]
    head += ["--config-name", config_name]
    failed = 0
    points = sweep_points(sweep)
    for swept in itertools.islice(points, max_points):
        overrides = fixed + swept
        echo(shlex.join(head + overrides))
        try:
            check_point(config_dir, config_name, overrides + list(extra or []))
        except (ConfigError, DataError) as err:
            failed += 1
            echo(f"  FAILED: {err}")
        else:
            echo("  OK")
    return failed
