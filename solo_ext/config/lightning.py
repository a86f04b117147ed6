"""What Lightning makes of a run's accelerator, nodes, devices, strategy and precision.

How many processes a run starts and at which precision it computes are Lightning's decisions.
Rather than re-derive its rules (``devices: auto``, device-id strings, which accelerator exists
here, which precision it runs on which device), the config layer asks Lightning: a ``Trainer``
built from those five arguments alone, quietly. Its refusal becomes the one-line
:class:`~solo_ext.config.errors.ConfigError` naming the key it concerns; a precision Lightning
would silently replace (``16-mixed`` on the CPU becomes ``bf16-mixed``) is refused too, so that a
run computes at the precision its config and args.json say.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from solo_ext.config.errors import fail

# The Trainer arguments that decide the processes and the precision, in the order in which a
# refusal is attributed to them (see _refused_key).
RESOLVED_KEYS = ("accelerator", "num_nodes", "devices", "strategy", "precision")
# What Lightning raises for arguments it cannot use: its own exception, a value or type it cannot
# parse (devices "a,b" on the CPU), or a back-end that is not installed (tpu, transformer-engine).
_REFUSALS = (MisconfigurationException, ValueError, TypeError, ImportError)
_MAX_LINE = 200


@dataclass(frozen=True)
class Resolved:
    """Lightning's reading of the run: processes in all (devices per node x nodes) and the
    precision it computes at (its canonical name, e.g. ``bf16-mixed``)."""

    world_size: int
    precision: str


def lightning_devices(accelerator: Any, devices: Any) -> Any:
    """``devices`` as Lightning takes it. Its CPU accelerator counts processes and refuses device
    ids, so on ``accelerator: cpu`` a list of ids (``[0, 1]``, or Lightning's string ``"0,1"``)
    stands for that many processes; anything else is passed on for Lightning to judge."""
    if accelerator != "cpu":
        return devices
    if isinstance(devices, str) and "," in devices:
        devices = devices.split(",")
    if not isinstance(devices, list | tuple):
        return devices
    ids = [str(device).strip() for device in devices if str(device).strip()]
    return len(ids) if ids and all(device.isdigit() for device in ids) else devices


@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's start-up lines and warnings (``GPU available: ...``) are for the real Trainer;
    while we only ask, they are held back."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def cluster_plugins(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list:
    """The cluster environment Lightning should use for a run, as a plugin list.

    Inside a SLURM job (as Lightning detects one): in a one-task allocation (a sweep agent's
    job, ``sbatch --ntasks=1``) Lightning would take SLURM's single task as the whole run and
    silently start one process where ``devices`` asks for several, so Lightning's own launcher
    starts them (:class:`LightningEnvironment`); with several tasks SLURM starts the processes
    and Lightning joins them, without its auto-requeue (the run's own Checkpointer saves into the
    run folder and requeues). Outside SLURM: none (Lightning's default).

    Raises:
        ConfigError: ``--ntasks-per-node`` above 1 and different from ``devices``, or a one-task
            allocation asked for several nodes; one line naming the key and the SLURM setting.
    """
    env = os.environ if environ is None else environ
    with _quiet():  # Lightning's hint that srun exists is for the real Trainer
        inside = SLURMEnvironment.detect()
    if not inside:
        return []
    ntasks = int(env.get("SLURM_NTASKS", "1") or 1)
    devices = flags.get("devices")
    per_node = env.get("SLURM_NTASKS_PER_NODE", "")
    if ntasks == 1:
        if int(flags.get("num_nodes", 1) or 1) > 1:
            raise fail(
                "num_nodes",
                flags.get("num_nodes"),
                "this SLURM job has one task, which runs on one node; submit with "
                "--nodes=N --ntasks-per-node=<devices> for several nodes",
            )
        return [LightningEnvironment()]
    tasks_per_node = int(per_node.split("(")[0]) if per_node.split("(")[0].isdigit() else None
    if tasks_per_node is None:
        raise fail(
            "devices",
            devices,
            f"this SLURM job has {ntasks} tasks (--ntasks={ntasks}) but no --ntasks-per-node; submit with "
            "--ntasks-per-node=<devices> (and --nodes=<num_nodes>), or --ntasks=1 to let solo-ext start "
            "the processes",
        )
    if tasks_per_node > 1 and str(tasks_per_node) != str(
        lightning_devices(flags.get("accelerator"), devices)
    ):
        raise fail(
            "devices",
            devices,
            f"SLURM starts {tasks_per_node} tasks per node (--ntasks-per-node={tasks_per_node}); set "
            f"devices={tasks_per_node}, or submit with --ntasks-per-node=<devices>",
        )
    return [SLURMEnvironment(auto_requeue=False)]


def _trainer(flags: Mapping[str, Any], plugins: list | None = None) -> Trainer:
    flags = {**flags}
    if plugins:
        # a precision plugin given with the Trainer (build_trainer's test seam) sets the precision
        if any(isinstance(plugin, Precision) for plugin in plugins):
            flags.pop("precision", None)
        flags["plugins"] = plugins
    if "devices" in flags:
        flags["devices"] = lightning_devices(flags.get("accelerator", "auto"), flags["devices"])
    with _quiet():
        return Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **flags,
        )


def resolve_trainer(flags: Mapping[str, Any], plugins: list | None = None) -> Resolved:
    """Lightning's world size and precision for ``flags`` (the :data:`RESOLVED_KEYS` of a
    validated config, precision in Lightning's canonical spelling). ``plugins``: Lightning
    plugins the run's Trainer will get (:func:`solo_ext.run.common.build_trainer`'s seam, e.g.
    ``MixedPrecision("16-mixed", "cpu", scaler=...)`` to run fp16 with a real GradScaler on the
    CPU); its precision must then be the one ``flags`` name.

    Raises:
        ConfigError: Lightning refuses a value (no such accelerator here, devices it cannot parse
            or that do not exist, an unknown strategy, ...), or would run another precision
            than the one asked for; one line naming the key.
    """
    flags = {key: flags[key] for key in RESOLVED_KEYS}
    plugins = [*(plugins or []), *cluster_plugins(flags)]
    try:
        trainer = _trainer(flags, plugins)
    except _REFUSALS as err:
        key = _refused_key(flags)
        reason = _reason(err, key, max(_MAX_LINE - len(f"{key}={flags[key]!r}: "), 80))
    else:
        if trainer.precision == flags["precision"]:
            return Resolved(trainer.world_size, trainer.precision)
        key = "precision"
        reason = (
            f"Lightning would run it as {trainer.precision!r} on the {trainer.strategy.root_device.type}; "
            f"set precision={trainer.precision} (or 32-true)"
        )
    raise fail(key, flags[key], reason) from None


def _refused_key(flags: Mapping[str, Any]) -> str:
    """The key Lightning refuses: the first of :data:`RESOLVED_KEYS` which, added to those
    before it, makes the Trainer fail (a combination, such as fsdp on the CPU, is laid on the
    later key)."""
    for i, key in enumerate(RESOLVED_KEYS):
        try:
            _trainer({k: flags[k] for k in RESOLVED_KEYS[: i + 1]})
        except _REFUSALS:
            return key
    return RESOLVED_KEYS[-1]  # only the whole set fails


def _reason(err: Exception, key: str, room: int) -> str:
    """Lightning's message in at most ``room`` characters of one line: as many of its sentences
    as fit, and for the accelerator the ones Lightning finds on this machine."""
    available = ""
    if key == "accelerator":
        here = [name for name, entry in AcceleratorRegistry.items() if entry["accelerator"].is_available()]
        available = f" (available here: {', '.join(here)})"
    room -= len(available)
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(str(err).split()))
    text = sentences[0] if len(sentences[0]) <= room else sentences[0][: room - 3] + "..."
    for sentence in sentences[1:]:
        if len(text) + 1 + len(sentence) > room:
            break
        text += f" {sentence}"
    return text + available


__all__ = ["RESOLVED_KEYS", "Resolved", "cluster_plugins", "lightning_devices", "resolve_trainer"]
