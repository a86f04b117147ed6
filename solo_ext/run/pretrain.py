"""What ``main_pretrain.py`` does, as a function: cfg -> method -> data -> Trainer.fit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from solo_ext.config.errors import ConfigError
from solo_ext.config.lightning import lightning_devices
from solo_ext.config.pretrain import parse_cfg
from solo_ext.config.schema import trainer_keys
from solo_ext.data import (
    FolderListings,
    FullTransformPipeline,
    NCropAugmentation,
    dataset_mean_std,
    prepare_classification_datasets,
    prepare_dataloader,
    prepare_pretrain_dataset,
)
from solo_ext.data.dali import dali_classification_loader, dali_pretrain_loader
from solo_ext.data.loaders import classification_transforms, image_backend, pretrain_transform
from solo_ext.eval.callbacks import PicturesCallback
from solo_ext.methods import METHODS
from solo_ext.results import collect_results, format_summary, write_results
from solo_ext.utils.checkpointer import Checkpointer, find_resumable, new_run_id
from solo_ext.utils.quiet import quiet_libraries

# Lightning's launcher re-runs this script in each child process; rank 0 hands them the run id and
# the checkpoint to resume so that every process agrees (never re-derived per rank).
RUN_ID_ENV, CKPT_ENV = "SOLO_EXT_RUN_ID", "SOLO_EXT_RESUME_CKPT"


def build_pretrain_loaders(cfg: DictConfig):
    """(train loader of ``[idx, [crops], y]``, list of val loaders: the val set and, with
    ``knn_eval.bank: clean``, the training set under the val transform for the kNN bank). The
    train folder is listed once for all of them.

    Image folders are read by the tensor back-end (uint8 batches) or, with ``data.format: dali``,
    by DALI (:func:`~solo_ext.data.loaders.image_backend`); the methods normalise uint8 batches
    on the device."""
    data = cfg.data
    backend = image_backend(data.dataset, data.format)
    augmentations = [OmegaConf.to_container(aug, resolve=True) for aug in cfg.augmentations]
    transform = None
    if backend != "dali":
        transform = FullTransformPipeline(
            [
                NCropAugmentation(pretrain_transform(backend, data.dataset, aug), aug["num_crops"])
                for aug in augmentations
            ]
        )
    # how every dataset of this run reads its folders (sharing their listings)
    reading = {
        "data_format": data.format,
        "fraction": data.fraction,
        "decode": "tensor" if backend == "tensor" else "pil",
        "listings": FolderListings(),
    }
    train_ds = prepare_pretrain_dataset(
        data.dataset, transform, train_path=data.train_path, no_labels=data.no_labels, **reading
    )
    batch_size = cfg.optimizer.batch_size
    if backend == "dali":
        train_loader = dali_pretrain_loader(train_ds, augmentations, batch_size, data.num_workers, cfg.seed)
    else:
        # Its own generator, re-seeded every epoch by the method (see BaseMethod.on_train_epoch_start):
        # the shuffling does not depend on when Lightning happens to create the iterator.
        train_loader = prepare_dataloader(train_ds, batch_size, data.num_workers, generator=torch.Generator())
    has_val = not data.no_labels and (
        data.val_path is not None or data.dataset not in ("custom", "imagenet", "imagenet100")
    )
    if not has_val:
        return train_loader, []
    crop_size = max(aug["crop_size"] for aug in augmentations)
    val_transform = None
    if backend != "dali":
        _, val_transform = classification_transforms(backend, data.dataset, crop_size, augmentations[0])
    clean_train_ds, val_ds = prepare_classification_datasets(
        data.dataset,
        val_transform,
        val_transform,
        train_path=data.train_path,
        val_path=data.val_path,
        train=cfg.knn_eval.enabled and cfg.knn_eval.bank == "clean",  # the kNN bank's, if asked
        **reading,
    )

    def eval_loader(ds):
        if backend == "dali":
            return dali_classification_loader(
                ds, data.dataset, crop_size, batch_size, data.num_workers, cfg.seed, train=False
            )
        return prepare_dataloader(ds, batch_size, data.num_workers, shuffle=False, drop_last=False)

    loaders = [eval_loader(val_ds)]
    if clean_train_ds is not None:
        loaders.append(eval_loader(clean_train_ds))
    return train_loader, loaders


def resolve_run(cfg: DictConfig) -> tuple[str, str | None]:
    """(run id, checkpoint to resume or None): from the parent process, an explicit
    ``resume_from_checkpoint``, auto-resume, or a new id."""
    if os.environ.get(RUN_ID_ENV):
        return os.environ[RUN_ID_ENV], os.environ.get(CKPT_ENV) or None
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID") and cfg.wandb.enabled:
        # Under a wandb agent the run id is the agent's: use it for our run directory too.
        return os.environ["WANDB_RUN_ID"], None
    method_dir = Path(cfg.checkpoint.dir) / cfg.method
    if cfg.resume_from_checkpoint:
        ckpt = Path(cfg.resume_from_checkpoint)
        return ckpt.parent.name if (ckpt.parent / "args.json").exists() else new_run_id(method_dir), str(ckpt)
    if cfg.auto_resume.enabled:
        ckpt, run_id = find_resumable(cfg)
        if ckpt is not None:
            print(f"auto-resume: continuing run {run_id} from {ckpt}")
            return run_id, str(ckpt)
    return new_run_id(method_dir), None


def build_trainer(cfg: DictConfig, run_dir: Path, run_id: str, callbacks: list) -> pl.Trainer:
    quiet_libraries()
    if torch.cuda.is_available():
        # TF32 tensor cores for float32 matmuls (the parts autocast leaves in float32)
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    loggers = [CSVLogger(save_dir=str(run_dir), name="csv")]
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
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    kwargs = {key: cfg[key] for key in trainer_keys() if key in cfg}
    kwargs = OmegaConf.to_container(OmegaConf.create(kwargs), resolve=True)
    # as the config layer resolved them (solo_ext.config.lightning): CPU device ids are counted
    kwargs["devices"] = lightning_devices(kwargs["accelerator"], kwargs["devices"])
    if kwargs.get("strategy") == "ddp":
        # Every trainable parameter gets a gradient every step (pos embeddings are fixed).
        kwargs["strategy"] = DDPStrategy(find_unused_parameters=False)
    # Metric states reset inside trainer.validate would otherwise become inference tensors that the
    # no_grad validation of fit may not update.
    kwargs.setdefault("inference_mode", False)
    callbacks = [LearningRateMonitor(logging_interval="step"), *callbacks]  # + Lightning's progress bar
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


def regularizer_lines(cfg: DictConfig) -> list[str]:
    """Start-up lines: each regularizer's batch and weight, the online protocols, and one warning
    when gradient accumulation meets a regularizer computed on the batch."""
    derived = cfg.derived
    lines = [
        f"regularizer {name}: sees a batch of {info.batch} ({'gathered over' if info.gather else 'per'} "
        f"process{'es' if info.gather else ''}), effective weight {info.effective_weight:g} "
        f"(U-MAE/M-MAE code on {derived.world_size} process(es): lamb {info.upstream_lamb:g})"
        for name, info in derived.regularizers.items()
    ]
    lines += [f"{name}: {text}" for name, text in derived.protocols.items()]
    if cfg.accumulate_grad_batches > 1 and derived.regularizers:
        lines.append(
            f"WARNING: accumulate_grad_batches={cfg.accumulate_grad_batches} does not enlarge the batch "
            f"{', '.join(derived.regularizers)} see(s) (computed per micro-batch); raise batch_size or "
            "devices to match a larger batch"
        )
    return lines


def run_pretrain(raw_cfg: DictConfig) -> pl.Trainer:
    cfg = parse_cfg(raw_cfg)
    check_not_multirun_ddp(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    train_loader, val_loaders = build_pretrain_loaders(cfg)
    run_id, ckpt_path = resolve_run(cfg)
    if cfg.derived.world_size > 1:
        os.environ[RUN_ID_ENV], os.environ[CKPT_ENV] = run_id, ckpt_path or ""
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id

    model = METHODS[cfg.method](cfg)
    callbacks = []
    checkpointer = Checkpointer(
        cfg, run_dir, run_id, frequency=cfg.checkpoint.frequency, keep_prev=cfg.checkpoint.keep_prev
    )
    if cfg.checkpoint.enabled:
        callbacks.append(checkpointer)
    if val_loaders:
        mean, std = dataset_mean_std(cfg.data.dataset, cfg.augmentations[0])
        callbacks.append(
            PicturesCallback(
                run_dir,
                mean,
                std,
                reconstruction_frequency=cfg.reconstructions.frequency
                if cfg.reconstructions.enabled
                else None,
                num_images=cfg.reconstructions.num_images,
                spectrum_frequency=cfg.diagnostics.spectrum_frequency if cfg.diagnostics.enabled else None,
            )
        )
    trainer = build_trainer(cfg, run_dir, run_id, callbacks)
    if not cfg.checkpoint.enabled and trainer.is_global_zero:
        checkpointer.save_args()  # args.json beside the logs even without checkpoints
    derived = cfg.derived
    if trainer.is_global_zero:
        print(
            f"run {run_id}: {derived.world_size} process(es), global batch {derived.global_batch_size}, "
            f"lr {cfg.optimizer.lr} x {derived.lr_scale:g} = {derived.lr:.3g} -> {run_dir}"
        )
        for line in regularizer_lines(cfg):
            print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)
    if val_loaders and ckpt_path is None and cfg.diagnostics.validate_before_training:
        # The untrained model's numbers, logged at step 0: the baseline the run is judged against.
        trainer.validate(model, val_loaders, verbose=False)
    trainer.fit(model, train_loader, val_loaders or None, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        spectrum = model.last_singular_values
        finish_run(cfg, run_dir, {"spectrum": None if spectrum is None else spectrum.tolist()})
    return trainer


def finish_run(cfg: DictConfig, run_dir: Path, extra: dict | None = None) -> None:
    """Print what the run reached and write it to results.json (rank 0, after fit)."""
    args = OmegaConf.to_container(cfg, resolve=True)
    results = collect_results(run_dir, args, extra)
    path = write_results(run_dir, results)
    print(format_summary(results, path))
