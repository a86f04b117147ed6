"""What ``main_pretrain.py`` does, as a function: cfg -> method -> data -> Trainer.fit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from solo_ext.config.pretrain import parse_run
from solo_ext.data import (
    dataset_mean_std,
)
from solo_ext.data.runs import pretrain_loaders
from solo_ext.eval.callbacks import PicturesCallback
from solo_ext.methods import METHODS
from solo_ext.run.common import (
    CKPT_ENV,
    RUN_ID_ENV,
    build_trainer,
    check_fits,
    check_not_multirun_ddp,
    claim_run_folder,
    finish_run,
    knn_bank_line,
    loader_arguments,
    record_knn_bank,
    resolve_run,
    run_checkpointer,
)


def build_pretrain_loaders(cfg: DictConfig):
    """The run's loaders (:func:`solo_ext.data.runs.pretrain_loaders`) from its config."""
    return pretrain_loaders(
        cfg.data.dataset,
        **loader_arguments(cfg),
        no_labels=cfg.data.no_labels,
        augmentations=[
            cast(dict[str, Any], OmegaConf.to_container(aug, resolve=True)) for aug in cfg.augmentations
        ],
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
    lines += knn_bank_line(cfg)
    if cfg.accumulate_grad_batches > 1 and derived.regularizers:
        lines.append(
            f"WARNING: accumulate_grad_batches={cfg.accumulate_grad_batches} does not enlarge the batch "
            f"{', '.join(derived.regularizers)} see(s) (computed per micro-batch); raise batch_size or "
            "devices to match a larger batch"
        )
    return lines


def run_pretrain(raw_cfg: DictConfig, plugins: list | None = None) -> pl.Trainer:
    """``main_pretrain.py`` on a composed config; ``plugins``: see :func:`build_trainer`."""
    cfg, method_kwargs = parse_run(raw_cfg, plugins)
    check_not_multirun_ddp(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    train_loader, val_loaders = build_pretrain_loaders(cfg)
    run_id, ckpt_path = resolve_run(cfg)
    if cfg.derived.world_size > 1:
        os.environ[RUN_ID_ENV], os.environ[CKPT_ENV] = run_id, ckpt_path or ""
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id
    lock = claim_run_folder(run_dir)
    try:
        trainer, model = fit_pretrain(
            cfg, train_loader, val_loaders, run_dir, run_id, ckpt_path, plugins, method_kwargs
        )
    finally:
        if lock is not None:
            lock.release()
    return trainer


def fit_pretrain(cfg, train_loader, val_loaders, run_dir, run_id, ckpt_path, plugins, method_kwargs=None):
    model = METHODS[cfg.method](cfg, method_kwargs)
    record_knn_bank(cfg, train_loader, model.features_dim)
    callbacks = [run_checkpointer(cfg, run_dir, run_id)]
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
    trainer = build_trainer(cfg, run_dir, run_id, callbacks, plugins)
    derived = cfg.derived
    if trainer.is_global_zero:
        print(
            f"run {run_id}: {derived.world_size} process(es), global batch {derived.global_batch_size}, "
            f"lr {cfg.optimizer.lr} x {derived.lr_scale:g} = {derived.lr:.3g} -> {run_dir}"
        )
        for line in regularizer_lines(cfg):
            print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)
    if ckpt_path is not None:
        check_fits(model, ckpt_path)
    if val_loaders and ckpt_path is None and cfg.diagnostics.validate_before_training:
        # The untrained model's numbers, logged at step 0: the baseline the run is judged against.
        trainer.validate(model, val_loaders, verbose=False)
    trainer.fit(model, train_loader, val_loaders or None, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        spectrum = model.last_singular_values
        finish_run(cfg, run_dir, {"spectrum": None if spectrum is None else spectrum.tolist()})
    return trainer, model
