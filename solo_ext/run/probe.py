"""``main_linear.py`` with ``mode: probe``: the offline probe of a frozen representation.

The backbone's features (``cfg.features``: cls or mean) of the training and val sets are
extracted once, through the val transform (no augmentation); with ``probe.train_views:
augmented`` also ``probe.num_views`` passes of the training set through the pretraining run's
first augmentation pipeline (from its args.json), which the heads then train on. The grid of
:mod:`solo_ext.eval.probe` chooses its setting on held-out training images and scores the chosen
head on val. With ``probe.random_baseline`` the same probe runs on a randomly initialised backbone
of the same architecture (seeded by ``seed``), reported beside.

Writes to ``<checkpoint.dir>/linear/<run id>/``: ``args.json``, ``results.json`` (``metrics``
as every run has them, ``probe``: the chosen setting and every setting's held-out accuracy,
``random_backbone``: the same for the baseline) and ``probe_head.pt`` (the chosen head: weight,
bias and the BatchNorm statistics).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from solo_ext.backbones import MaskedViT, build_backbone
from solo_ext.config.errors import fail
from solo_ext.config.paths import saved_run_args
from solo_ext.data import prepare_classification_datasets, prepare_dataloader, prepare_transforms
from solo_ext.data.augmentations import build_transform_pipeline
from solo_ext.eval.diagnostics import atomic_output, effective_rank
from solo_ext.eval.probe import ProbeOutcome, head_grid, probe
from solo_ext.results import write_results
from solo_ext.run.common import claim_run_folder, run_checkpointer
from solo_ext.run.knn_eval import extract_features
from solo_ext.run.linear import load_backbone, resolve_linear_run

HEAD_FILE = "probe_head.pt"


def pretraining_augmentation(cfg: DictConfig) -> dict:
    """The first augmentation entry of the evaluated run's args.json (``probe.train_views: augmented``).

    Raises:
        ConfigError: no checkpoint, or no augmentations in the args.json beside it.
    """
    saved = saved_run_args(cfg.pretrained_feature_extractor) if cfg.pretrained_feature_extractor else None
    augmentations = (saved or {}).get("augmentations")
    if not augmentations:
        raise fail(
            "probe.train_views",
            "augmented",
            "needs the pretraining run's augmentations (an args.json beside the checkpoint); use clean",
        )
    return augmentations[0]


def feature_sets(
    cfg: DictConfig, backbone: MaskedViT, augmentation: dict | None, device: torch.device
) -> tuple[tuple, tuple, torch.Tensor | None]:
    """((train features (N, D), labels), (val features, labels), augmented views (V, N, D) or None)."""
    data = cfg.data
    _, clean = prepare_transforms(data.dataset, backbone.img_size)
    # the probe reads every image once, through PIL; DALI's pipelines would buy nothing here
    data_format = "image_folder" if data.format == "dali" else data.format
    paths = {"train_path": data.train_path, "val_path": data.val_path, "data_format": data_format}

    def features_of(ds) -> tuple[torch.Tensor, torch.Tensor]:
        loader = prepare_dataloader(
            ds, cfg.probe.batch_size, data.num_workers, shuffle=False, drop_last=False
        )
        feats, targets = extract_features(backbone, loader, [cfg.features], device)
        return feats[cfg.features], targets

    train_ds, val_ds = prepare_classification_datasets(
        data.dataset, clean, clean, fraction=data.fraction, **paths
    )
    train, val = features_of(train_ds), features_of(val_ds)
    views = None
    if augmentation is not None:
        augmented_ds, _ = prepare_classification_datasets(
            data.dataset,
            build_transform_pipeline(data.dataset, augmentation),
            clean,
            fraction=data.fraction,
            **paths,
        )
        torch.manual_seed(cfg.seed)  # the views' random crops and flips
        views = torch.stack([features_of(augmented_ds)[0] for _ in range(cfg.probe.num_views)])
    return train, val, views


def probe_backbone(
    cfg: DictConfig, backbone: MaskedViT, augmentation: dict | None, device: torch.device
) -> tuple[ProbeOutcome, float]:
    """The probe's outcome and the effective rank of the val features it scored."""
    train, val, views = feature_sets(cfg, backbone, augmentation, device)
    settings = cfg.probe
    outcome = probe(
        train,
        val,
        head_grid(settings.lrs, settings.weight_decays, settings.batchnorm),
        cfg.data.num_classes,
        holdout_fraction=settings.holdout_fraction,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        momentum=settings.momentum,
        seed=cfg.seed,
        train_views=views,
    )
    return outcome, effective_rank(val[0])


def outcome_section(outcome: ProbeOutcome) -> dict:
    return {
        "chosen": outcome.table()[outcome.settings.index(outcome.chosen)],
        "val_acc1": outcome.val_acc1,
        "val_acc5": outcome.val_acc5,
        "val_loss": outcome.val_loss,
        "curve": [{"epoch": epoch, "holdout_acc1": acc} for epoch, acc in outcome.curve],
        "grid": outcome.table(),
    }


def probe_results(
    cfg: DictConfig, run_dir: Path, outcome: ProbeOutcome, rank: float, baseline: ProbeOutcome | None
) -> dict:
    """results.json of a probe run: ``metrics`` in the form every run's results.json has (one
    measurement, so final = best; ``val_effective_rank``: of the val features probed), with the
    protocol, the chosen setting and its curve."""
    protocol = cfg.derived.protocols.linear
    epochs = cfg.probe.epochs
    metrics = {
        name: {"final": value, "best": value, "best_epoch": epochs, "epochs": epochs, "protocol": protocol}
        for name, value in (
            ("val_acc1", outcome.val_acc1),
            ("val_acc5", outcome.val_acc5),
            ("val_loss", outcome.val_loss),
            ("val_effective_rank", rank),
        )
    }
    return {
        "name": cfg.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
        "metrics": metrics,
        "protocols": OmegaConf.to_container(cfg.derived.protocols),
        "probe": outcome_section(outcome),
        "random_backbone": None if baseline is None else outcome_section(baseline),
        "checkpoint": str(run_dir / HEAD_FILE),
    }


def summary_lines(outcome: ProbeOutcome, baseline: ProbeOutcome | None, protocol: str) -> list[str]:
    held = max(outcome.holdout_acc1)
    lines = [
        f"probe val_acc1 {outcome.val_acc1:.2f}  val_acc5 {outcome.val_acc5:.2f}  "
        f"(chosen: {outcome.chosen.describe()}; held-out acc1 {held:.2f})",
        "held-out acc1 of the chosen setting by epoch: "
        + ", ".join(f"{epoch}: {acc:.2f}" for epoch, acc in outcome.curve),
    ]
    if baseline is not None:
        lines.append(
            f"random backbone val_acc1 {baseline.val_acc1:.2f}  val_acc5 {baseline.val_acc5:.2f}  "
            f"(chosen: {baseline.chosen.describe()})"
        )
    lines.append(f"[{protocol}]")
    return lines


def run_probe(cfg: DictConfig) -> dict:
    """The probe of ``cfg`` (a parsed config with ``mode: probe``); returns its results.json."""
    torch.manual_seed(cfg.seed)
    # every error a user can cause (bad weights, missing data, no augmentations) surfaces before a
    # file is written
    backbone = load_backbone(cfg)
    augmentation = pretraining_augmentation(cfg) if cfg.probe.train_views == "augmented" else None
    use_cuda = cfg.accelerator != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    outcome, rank = probe_backbone(cfg, backbone, augmentation, device)
    baseline = None
    if cfg.probe.random_baseline and cfg.pretrained_feature_extractor is not None:
        torch.manual_seed(cfg.seed)
        kwargs = cast(dict[str, Any], OmegaConf.to_container(cfg.backbone.kwargs))
        random_backbone = build_backbone(cfg.backbone.name, kwargs)
        baseline, _ = probe_backbone(cfg, random_backbone, augmentation, device)

    run_id, _ = resolve_linear_run(cfg)  # a probe has no state to resume: it runs whole each time
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id
    lock = claim_run_folder(run_dir)
    try:
        run_checkpointer(cfg, run_dir, run_id).save_args()
        with atomic_output(run_dir / HEAD_FILE) as tmp:
            torch.save(outcome.head.state_dict(), tmp)
        results = probe_results(cfg, run_dir, outcome, rank, baseline)
        path = write_results(run_dir, results)
    finally:
        if lock is not None:
            lock.release()
    print(f"== results of {cfg.name} ({run_dir}) ==")
    for line in summary_lines(outcome, baseline, cfg.derived.protocols.linear):
        print(line)
    print(f"results: {path}", file=sys.stdout)
    return results
