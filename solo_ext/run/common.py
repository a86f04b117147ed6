"""What the pretraining and the linear-evaluation runners share: finding a run and claiming its
folder, the Trainer they build, the Checkpointer, the kNN bank's size and the end-of-run summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from solo_ext.config.errors import ConfigError
from solo_ext.config.lightning import cluster_plugins, lightning_devices
from solo_ext.config.schema import trainer_keys
from solo_ext.eval.online import bank_size
from solo_ext.results import collect_results, format_summary, write_results
from solo_ext.run.checkpointer import Checkpointer
from solo_ext.run.progress import ProgressLines, wants_lines
from solo_ext.utils.quiet import quiet_libraries
from solo_ext.utils.runfolder import (
    ARGS_FILE,
    SHOULD_MATCH,
    RunFolderError,
    RunLock,
    find_resumable,
    job_identity,
    mismatched_keys,
    new_run_id,
    newest_readable_state,
    plain,
    read_args,
    remove_stale_temporaries,
    run_id_of,
    select,
    states_in,
    unreadable_reason,
)

# Lightning's launcher re-runs this script in each child process; rank 0 hands them the run id and
# the checkpoint to resume so that every process agrees (never re-derived per rank).
RUN_ID_ENV, CKPT_ENV = "SOLO_EXT_RUN_ID", "SOLO_EXT_RESUME_CKPT"


def loader_arguments(cfg: DictConfig) -> dict[str, Any]:
    """What the loaders of data/runs.py read from any run's config: its folders and how it reads
    them, the batch, the seed and whether the online kNN bank needs the clean training set."""
    data = cfg.data
    return {
        "train_path": data.train_path,
        "val_path": data.val_path,
        "data_format": data.format,
        "fraction": data.fraction,
        "num_workers": data.num_workers,
        "batch_size": cfg.optimizer.batch_size,
        "seed": cfg.seed,
        "clean_bank": cfg.knn_eval.enabled and cfg.knn_eval.bank == "clean",
    }


def job_fingerprint(cfg: DictConfig, keys=SHOULD_MATCH) -> str:
    """The settings a scheduler's job identity is combined with (SHOULD_MATCH's values), so that
    one job running several trainings (seeds one after the other, a Hydra multirun) gives each its
    own run, and the same training started again by a requeue finds its own."""
    values = {key: plain(select(cfg, key)) for key in keys}
    return json.dumps(values, sort_keys=True, default=str)


def run_of_identity(cfg: DictConfig, identity: str, named: bool, keys=SHOULD_MATCH) -> tuple[str, str | None]:
    """(run id, checkpoint or None) of a job identity: its run folder, continued from its newest
    readable state when it has one. ``named``: the identity is the user's ``run_name``, whose run
    must have been trained with the same settings."""
    run_id = run_id_of(identity if named else f"{identity}|{job_fingerprint(cfg, keys)}")
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id
    if not run_dir.exists():
        return run_id, None
    old = read_args(run_dir)
    states = states_in(run_dir)
    if old is None:
        if states:
            raise RunFolderError(
                f"{run_dir} holds checkpoints but no readable args.json, so it cannot be checked against "
                "this config; restore args.json, or move the folder away to start afresh"
            )
        return run_id, None
    different = mismatched_keys(old, cfg, keys)
    if old.get("job_identity") != identity or different:
        key = different[0] if different else "job_identity"
        raise RunFolderError(
            f"{'run_name=' + repr(cfg.run_name) if named else 'this job'} names run {run_dir}, trained "
            f"with {key}={plain(select(old, key))!r} where this config has {plain(select(cfg, key))!r}; "
            "choose another run_name (or checkpoint.dir)"
        )
    ckpt = newest_readable_state(run_dir)
    if ckpt is None:
        return run_id, None
    print(f"resume: {identity.split(':')[0]} job continues run {run_id} from {ckpt}")
    return run_id, str(ckpt)


def resolve_run(cfg: DictConfig, keys=SHOULD_MATCH) -> tuple[str, str | None]:
    """(run id, checkpoint to resume or None), by one rule: from the parent process (Lightning's
    launcher); an explicit ``resume_from_checkpoint``; under a wandb agent, the agent's run id;
    the job's identity (``run_name``, else else the SLURM job: see
    :func:`solo_ext.utils.runfolder.job_identity`); auto-resume by config and data; else a new id.
    ``keys``: what must agree for a run to be continued."""
    if os.environ.get(RUN_ID_ENV):
        return os.environ[RUN_ID_ENV], os.environ.get(CKPT_ENV) or None
    method_dir = Path(cfg.checkpoint.dir) / cfg.method
    if cfg.resume_from_checkpoint:
        ckpt = Path(cfg.resume_from_checkpoint)
        reason = unreadable_reason(ckpt)
        if reason is not None:
            raise RunFolderError(f"resume_from_checkpoint={str(ckpt)!r}: cannot be read ({reason})")
        return ckpt.parent.name if (ckpt.parent / ARGS_FILE).exists() else new_run_id(method_dir), str(ckpt)
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID") and cfg.wandb.enabled:
        # Under a wandb agent the run id is the agent's trial: use it for our run directory too
        # (a requeued agent job asks the sweep for a new trial).
        return os.environ["WANDB_RUN_ID"], None
    identity = job_identity(cfg.get("run_name"))
    if identity is not None:
        return run_of_identity(cfg, identity, named=bool(cfg.get("run_name")), keys=keys)
    if cfg.auto_resume.enabled:
        found, found_id = find_resumable(cfg, keys=keys)
        if found is not None and found_id is not None:  # both or neither
            print(f"auto-resume: continuing run {found_id} from {found}")
            return found_id, str(found)
    return new_run_id(method_dir), None


def launch_rank() -> int:
    """This process's global rank as its launcher set it before any process group exists (srun,
    torchrun); 0 for Lightning's own launcher, whose children get the run from the parent."""
    if os.environ.get(RUN_ID_ENV):
        return int(os.environ.get("RANK") or 1)  # a child of Lightning's launcher
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def claim_run_folder(run_dir: Path) -> RunLock | None:
    """Rank 0 locks the run folder before writing anything there and clears what crashed writers
    left; other ranks return None."""
    if launch_rank() != 0:
        return None
    lock = RunLock(run_dir)
    lock.acquire()
    stale = remove_stale_temporaries(run_dir)
    if stale:
        print(f"removed {len(stale)} unfinished file(s) of an earlier attempt in {run_dir}")
    return lock


def build_trainer(
    cfg: DictConfig, run_dir: Path, run_id: str, callbacks: list, plugins: list | None = None
) -> pl.Trainer:
    """The run's Trainer from its config. ``plugins`` (a seam for tests and embedding code):
    Lightning plugins handed to the Trainer as they are; a precision plugin among them replaces
    the ``precision`` key, e.g. ``MixedPrecision("16-mixed", "cpu", scaler=GradScaler("cpu"))``
    runs Lightning's and torch's fp16 code with a real GradScaler on the CPU."""
    quiet_libraries()
    if torch.cuda.is_available():
        # TF32 tensor cores for float32 matmuls (the parts autocast leaves in float32)
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv")]
    if cfg.wandb.enabled:
        wandb_logger = WandbLogger(
            name=cfg.name,
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            offline=cfg.wandb.offline,
            id=run_id,
            resume="allow",
            save_dir=str(run_dir),
        )
        # Lightning always passes anonymous (None), which wandb >= 0.19 answers with a warning
        # that the setting has no effect; unset, wandb says nothing.
        wandb_logger._wandb_init.pop("anonymous", None)
        loggers.append(wandb_logger)
    for logger in loggers:  # the resolved config, derived lr and world size included
        logger.log_hyperparams(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    kwargs = {key: cfg[key] for key in trainer_keys() if key in cfg}
    kwargs = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.create(kwargs), resolve=True))
    # as the config layer resolved them (solo_ext.config.lightning): CPU device ids are counted
    kwargs["devices"] = lightning_devices(kwargs["accelerator"], kwargs["devices"])
    if kwargs.get("strategy") == "ddp":
        # Every trainable parameter gets a gradient every step (pos embeddings are fixed).
        kwargs["strategy"] = DDPStrategy(find_unused_parameters=False)
    # Metric states reset inside trainer.validate would otherwise become inference tensors that the
    # no_grad validation of fit may not update.
    kwargs.setdefault("inference_mode", False)
    plugins = [*(plugins or []), *cluster_plugins(kwargs)]
    if any(isinstance(plugin, Precision) for plugin in plugins):
        kwargs.pop("precision", None)
    if plugins:
        kwargs["plugins"] = plugins
    # Lightning's own SLURM checkpoints (hpc_ckpt_N.ckpt) are looked for in default_root_dir: the
    # run's folder, where only this run's files are
    kwargs["default_root_dir"] = str(run_dir)
    callbacks = [LearningRateMonitor(logging_interval="step"), *callbacks]  # + Lightning's progress bar
    if wants_lines(kwargs.get("enable_progress_bar")):
        kwargs["enable_progress_bar"] = False
        callbacks.append(ProgressLines())
    return pl.Trainer(logger=loggers, callbacks=callbacks, enable_checkpointing=False, **kwargs)


def check_not_multirun_ddp(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if (
        HydraConfig.initialized()
        and HydraConfig.get().mode == RunMode.MULTIRUN
        and cfg.derived.world_size > 1
    ):
        raise ConfigError(
            f"devices={cfg.devices!r}: in-process DDP inside a Hydra multirun (-m) is not supported; run one "
            "job per trial (wandb agent, Hydra's submitit launcher on SLURM) or devices=1 for local sweeps"
        )


def record_knn_bank(cfg: DictConfig, train_loader, dim: int) -> None:
    """``derived.knn_bank``: the most the online kNN's ``batches`` bank holds per process (rows,
    bytes, and bytes after its cross-process gather), from the loader's length before the run."""
    batches = len(train_loader)
    limit = cfg.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit * cfg.derived.world_size)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    crops = cfg.data.get("num_large_crops", 1)
    cfg.derived.knn_bank = bank_size(
        cfg.knn_eval,
        batches,
        cfg.optimizer.batch_size,
        crops,
        cfg.derived.world_size,
        dim,
        cfg.derived.precision,
    )


def knn_bank_line(cfg: DictConfig) -> list[str]:
    bank = cfg.derived.get("knn_bank")
    if not bank:
        return []
    return [
        f"online kNN bank: at most {bank.rows:,} rows per process, {bank.bytes / 2**20:.1f} MiB "
        f"({bank.bytes_gathered / 2**20:.1f} MiB on each process after the gather over "
        f"{cfg.derived.world_size} process(es)); knn_eval.max_bank caps the rows"
    ]


def check_fits(model: pl.LightningModule, ckpt_path: str) -> None:
    """A checkpoint to resume must hold this model's weights, shape for shape; else one line
    (a checkpoint of another architecture would otherwise stop deep inside Lightning)."""
    try:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    except Exception as err:  # noqa: BLE001 (any reason it cannot be read is the user's file's)
        raise RunFolderError(
            f"cannot read checkpoint {ckpt_path}: {' '.join(str(err).split())[:200]}"
        ) from None
    ours = model.state_dict()
    wrong = [
        f"{key}: {tuple(saved[key].shape)} vs {tuple(value.shape)}"
        for key, value in ours.items()
        if key in saved and tuple(saved[key].shape) != tuple(value.shape)
    ]
    missing = [key for key in ours if key not in saved]
    if wrong or missing:
        detail = wrong[0] if wrong else f"missing {missing[0]}"
        raise RunFolderError(
            f"checkpoint {ckpt_path} is of another model ({len(wrong)} shape(s) differ, {len(missing)} "
            f"missing; first: {detail}); resume it with the config it was trained with"
        )


def run_checkpointer(cfg: DictConfig, run_dir: Path, run_id: str) -> Checkpointer:
    """The run's Checkpointer from its ``checkpoint`` section (always present: it writes
    args.json and answers signals even when checkpoints are off)."""
    ckpt = cfg.checkpoint
    return Checkpointer(
        cfg,
        run_dir,
        run_id,
        frequency=ckpt.frequency,
        keep_prev=ckpt.keep_prev,
        every_n_steps=ckpt.get("every_n_steps"),
        every_n_minutes=ckpt.get("every_n_minutes"),
        identity=job_identity(cfg.get("run_name")),
        enabled=ckpt.enabled,
    )


def finish_run(cfg: DictConfig, run_dir: Path, extra: dict | None = None) -> None:
    """Print what the run reached and write it to results.json (rank 0, after fit)."""
    args = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    results = collect_results(run_dir, args, extra)
    path = write_results(run_dir, results)
    print(format_summary(results, path))
