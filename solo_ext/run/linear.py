"""What ``main_linear.py`` does, as a function: cfg -> pretrained backbone -> LinearModel -> fit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from solo_ext.backbones import MaskedViT, build_backbone
from solo_ext.backbones.loading import load_backbone_weights
from solo_ext.config.linear import parse_cfg
from solo_ext.data.runs import linear_loaders
from solo_ext.methods.linear import LinearModel
from solo_ext.run.common import (
    CKPT_ENV,
    RUN_ID_ENV,
    build_trainer,
    check_not_multirun_ddp,
    claim_run_folder,
    finish_run,
    knn_bank_line,
    loader_arguments,
    record_knn_bank,
    resolve_run,
    run_checkpointer,
)
from solo_ext.utils.runfolder import SHOULD_MATCH

# What makes two evaluation runs the same experiment, beyond the keys the pretraining auto-resume
# compares (name, backbone, dataset, optimizer, ...): which weights are evaluated, and how.
SAME_EVALUATION = ("pretrained_feature_extractor", "mode", "partial_blocks", "features", "batchnorm_head")


def load_backbone(cfg: DictConfig) -> MaskedViT:
    """Build ``cfg.backbone`` and load ``cfg.pretrained_feature_extractor`` into it, strictly.

    Raises:
        CheckpointError: unreadable checkpoint, or one that does not fit the backbone (missing,
            unexpected or mismatched keys listed).
    """
    kwargs = cast(dict[str, Any], OmegaConf.to_container(cfg.backbone.kwargs))
    backbone = build_backbone(cfg.backbone.name, kwargs)
    if cfg.pretrained_feature_extractor is None:
        print(
            "WARNING: pretrained_feature_extractor=None with allow_random_backbone=True: evaluating a "
            "RANDOMLY INITIALISED backbone; the numbers are a baseline, not a pretrained model's",
            file=sys.stderr,
        )
        return backbone
    report = load_backbone_weights(backbone, cfg.pretrained_feature_extractor)
    resized = ", positional embedding interpolated" if report["pos_embed_interpolated"] else ""
    print(
        f"loaded {report['num_tensors']} tensors ({report['format']} format{resized}) from "
        f"{cfg.pretrained_feature_extractor}"
    )
    return backbone


def build_linear_loaders(cfg: DictConfig, crop_size: int) -> tuple[DataLoader, list[DataLoader]]:
    """The run's loaders (:func:`solo_ext.data.runs.linear_loaders`) from its config."""
    return linear_loaders(
        cfg.data.dataset, **loader_arguments(cfg), crop_size=crop_size, auto_augment=cfg.auto_augment
    )


def resolve_linear_run(cfg: DictConfig) -> tuple[str, str | None]:
    """(run id, checkpoint to resume or None), as for pretraining, except that a run is the same
    only with the same evaluated checkpoint and protocol (:data:`SAME_EVALUATION`): a probe of
    another backbone is never continued."""
    return resolve_run(cfg, keys=SHOULD_MATCH + SAME_EVALUATION)


def run_linear(raw_cfg: DictConfig, plugins: list | None = None) -> pl.Trainer | dict:
    """``main_linear.py`` on a composed config; ``plugins``: see :func:`build_trainer`. With
    ``mode: probe``, the offline probe (:func:`solo_ext.run.probe.run_probe`; its results.json)."""
    cfg = parse_cfg(raw_cfg, plugins)
    if cfg.mode == "probe":
        from solo_ext.run.probe import run_probe  # (which imports this module)

        return run_probe(cfg)
    check_not_multirun_ddp(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # every error a user can cause (bad weights, missing data) surfaces before a file is written
    backbone = load_backbone(cfg)
    train_loader, val_loaders = build_linear_loaders(cfg, backbone.img_size)
    run_id, ckpt_path = resolve_linear_run(cfg)
    if cfg.derived.world_size > 1:
        os.environ[RUN_ID_ENV], os.environ[CKPT_ENV] = run_id, ckpt_path or ""
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id
    lock = claim_run_folder(run_dir)
    try:
        return fit_linear(cfg, backbone, train_loader, val_loaders, run_dir, run_id, ckpt_path, plugins)
    finally:
        if lock is not None:
            lock.release()


def fit_linear(cfg, backbone, train_loader, val_loaders, run_dir, run_id, ckpt_path, plugins) -> pl.Trainer:
    model = LinearModel(backbone, cfg)
    record_knn_bank(cfg, train_loader, backbone.num_features)
    trainer = build_trainer(cfg, run_dir, run_id, [run_checkpointer(cfg, run_dir, run_id)], plugins)
    if trainer.is_global_zero:
        derived = cfg.derived
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(
            f"run {run_id}: {cfg.mode} ({trainable:,} trainable parameters, {cfg.features} features), "
            f"{derived.world_size} process(es), global batch {derived.global_batch_size}, "
            f"lr {cfg.optimizer.lr} x {derived.lr_scale:g} = {derived.lr:.3g} -> {run_dir}"
        )
        for line in knn_bank_line(cfg):
            print(line)
    trainer.fit(model, train_loader, val_loaders, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        finish_run(cfg, run_dir)
    return trainer
