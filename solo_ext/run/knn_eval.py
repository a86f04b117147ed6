"""Offline weighted kNN evaluation of a pretrained backbone (what ``main_knn.py`` does).

The features of the training set (the bank) and of the val set are extracted once, both through
the val transform, on a GPU when one is available and on the CPU otherwise; then every
combination of feature type, distance, k and temperature is scored with
:func:`solo_ext.eval.knn.knn_predict` (Wu et al., CVPR 2018; see that module for the vote).
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from solo_ext.backbones import MaskedViT, build_backbone
from solo_ext.backbones.loading import load_backbone_weights
from solo_ext.config.errors import ConfigError, validate
from solo_ext.config.paths import resolve_weights_path, saved_run_args
from solo_ext.config.schema import DEFAULT_WORKERS, Backbone, OfflineKNN
from solo_ext.data import (
    num_classes_of,
    prepare_classification_datasets,
    prepare_dataloader,
    prepare_transforms,
)
from solo_ext.eval.diagnostics import atomic_output
from solo_ext.eval.knn import Distance, knn_accuracy, knn_predict
from solo_ext.results import merge_results

TABLE_COLUMNS = ("feature_type", "distance", "k", "T", "bank", "acc1", "acc5")
# offline, the bank is always the training set through the val transform
OFFLINE_BANK = "clean"
# what a run without these keys in its args.json gets (solo-learn's online kNN defaults)
KNN_FALLBACK = {"k": 20, "T": 0.07, "distance_func": "euclidean"}
# the backbone's keys as main_knn.py's flags, for error messages
BACKBONE_FLAGS = {"name": "--backbone", "kwargs": "--backbone_kwargs"}


def find_checkpoint(run_dir: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> Path:
    """The checkpoint to evaluate: ``checkpoint`` itself, or the newest of a run folder.

    Raises:
        ConfigError: neither or both given, or what :func:`resolve_weights_path` refuses.
    """
    if (run_dir is None) == (checkpoint is None):
        raise ConfigError("--pretrained_checkpoint_dir / --checkpoint: give exactly one of them")
    flag, value = (
        ("--checkpoint", checkpoint) if checkpoint is not None else ("--pretrained_checkpoint_dir", run_dir)
    )
    return Path(resolve_weights_path(flag, str(value)))


def backbone_for(
    checkpoint: Path, saved: Mapping, name: str | None = None, kwargs: dict | None = None
) -> MaskedViT:
    """Build the backbone the checkpoint was trained with and load it strictly.

    The name and kwargs come from ``name``/``kwargs`` when given, else from ``saved``, the
    ``args.json`` beside the checkpoint (``kwargs`` then override the saved ones).

    Raises:
        ConfigError: no backbone name given and none saved, or bad kwargs.
        CheckpointError: unreadable checkpoint, or one that does not fit (keys listed).
    """
    saved_backbone = saved.get("backbone") or {}
    if name is None:
        name = saved_backbone.get("name")
        kwargs = {**(saved_backbone.get("kwargs") or {}), **(kwargs or {})}
    # declared once, on the pretraining config's Backbone (a name absent here and in args.json too)
    arch = validate(Backbone, {"name": name, "kwargs": kwargs or {}}, renames=BACKBONE_FLAGS)
    backbone = build_backbone(arch.name, arch.kwargs.given())
    load_backbone_weights(backbone, checkpoint)
    return backbone


@torch.no_grad()
def extract_features(
    backbone: MaskedViT, loader: DataLoader, feature_types: Sequence[str], device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One pass over ``loader`` (batches ``[x (B, 3, H, W), y (B,)]``) with the backbone in eval mode.

    Returns:
        ({feature type: (N, D) float32 features on ``device``}, (N,) labels on ``device``).
    """
    backbone.eval().to(device)
    feats: dict[str, list[torch.Tensor]] = {t: [] for t in feature_types}
    targets = []
    for x, y in loader:
        tokens = backbone.forward_features(x.to(device, non_blocking=True)).tokens
        for feature_type in feature_types:
            feats[feature_type].append(backbone.pool(tokens, feature_type).float())
        targets.append(y.to(device))
    return {t: torch.cat(f) for t, f in feats.items()}, torch.cat(targets)


def knn_table(
    train: tuple[dict[str, torch.Tensor], torch.Tensor],
    val: tuple[dict[str, torch.Tensor], torch.Tensor],
    num_classes: int,
    ks: Sequence[int],
    temperatures: Sequence[float],
    distances: Sequence[Distance],
) -> list[dict]:
    """One row per (feature type, distance, k, T): acc@1 and acc@5 in percent.

    Args:
        train, val: (features by type, labels) from :func:`extract_features`.
        num_classes: C.
        ks, temperatures, distances: the values to combine. T plays no part in the euclidean
            vote, so its scores are computed once per k and repeated across T.
    """
    (train_feats, train_y), (val_feats, val_y) = train, val
    rows = []
    for feature_type, distance, k in itertools.product(train_feats, distances, ks):
        accuracy = None
        for T in temperatures:
            if accuracy is None or distance == "cosine":
                scores = knn_predict(
                    train_feats[feature_type], train_y, val_feats[feature_type], k, T, distance, num_classes
                )
                accuracy = knn_accuracy(scores, val_y)
            rows.append(dict(zip(TABLE_COLUMNS, (feature_type, distance, k, T, OFFLINE_BANK, *accuracy))))
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The rows as an aligned text table with a header line."""
    cells = [list(TABLE_COLUMNS)] + [
        [
            r["feature_type"],
            r["distance"],
            str(r["k"]),
            f"{r['T']:g}",
            r["bank"],
            f"{r['acc1']:.2f}",
            f"{r['acc5']:.2f}",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run_knn(
    *,
    pretrained_checkpoint_dir: str | None = None,
    checkpoint: str | None = None,
    dataset: str | None = None,
    train_data_path: str | None = None,
    val_data_path: str | None = None,
    data_format: str = "image_folder",
    data_fraction: float = -1.0,
    batch_size: int = 256,
    num_workers: int = DEFAULT_WORKERS,
    k: Sequence[int] | None = None,
    temperature: Sequence[float] | None = None,
    distance_function: Sequence[str] | None = None,
    feature_type: Sequence[str] | None = None,
    backbone: str | None = None,
    backbone_kwargs: dict | None = None,
) -> tuple[list[dict], Path]:
    """Evaluate a checkpoint by weighted kNN for every combination of the given settings.

    ``dataset`` and its paths default to those of the run's args.json; so do the settings left
    at None: ``feature_type`` is the run's online-probe features (``method_kwargs.online_features``),
    ``k``, ``temperature`` and ``distance_function`` its ``knn_eval`` values (solo-learn's 20, 0.07,
    euclidean when the run has none). Returns the table's rows and the CSV written beside the
    checkpoint (``<checkpoint stem>-knn-<dataset>.csv``).

    Raises:
        ConfigError, DataError, CheckpointError: bad settings, data or weights.
    """
    ckpt = find_checkpoint(pretrained_checkpoint_dir, checkpoint)
    saved = saved_run_args(ckpt, key="--checkpoint") or {}
    saved_knn = {**KNN_FALLBACK, **(saved.get("knn_eval") or {})}
    saved_data = saved.get("data") or {}
    if dataset is None:  # OfflineKNN refuses a dataset neither given nor in args.json
        dataset = saved_data.get("dataset")
        train_data_path = train_data_path or saved_data.get("train_path")
        val_data_path = val_data_path or saved_data.get("val_path")
    given = {
        "k": k or [saved_knn["k"]],
        "temperature": temperature or [saved_knn["T"]],
        "distance_function": distance_function or [saved_knn["distance_func"]],
        "feature_type": feature_type or [(saved.get("method_kwargs") or {}).get("online_features") or "cls"],
        "batch_size": batch_size,
        "num_workers": num_workers,
        "dataset": dataset,
        "data_format": data_format,
        "data_fraction": data_fraction,
    }
    settings = validate(OfflineKNN, given, renames=OfflineKNN.flags())
    assert dataset is not None  # refused by OfflineKNN when neither given nor in args.json
    model = backbone_for(ckpt, saved, backbone, backbone_kwargs)

    _, val_transform = prepare_transforms(dataset, model.img_size)
    train_ds, val_ds = prepare_classification_datasets(
        dataset, val_transform, val_transform, train_data_path, val_data_path, data_format, data_fraction
    )
    assert train_ds is not None  # built: train=True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feature_types = list(dict.fromkeys(settings.feature_type))
    train_bank, val_bank = [
        extract_features(
            model,
            prepare_dataloader(ds, batch_size, num_workers, shuffle=False, drop_last=False),
            feature_types,
            device,
        )
        for ds in (train_ds, val_ds)
    ]
    num_classes = num_classes_of(dataset, train_data_path)
    assert num_classes is not None  # labelled: None only with no_labels
    rows = knn_table(
        train_bank,
        val_bank,
        num_classes=num_classes,
        ks=list(dict.fromkeys(settings.k)),
        temperatures=list(dict.fromkeys(settings.temperature)),
        distances=list(dict.fromkeys(settings.distance_function)),
    )
    path = ckpt.with_name(f"{ckpt.stem}-knn-{dataset}.csv")
    write_csv(rows, path)
    return rows, path


def record_results(rows: Sequence[dict], csv_path: Path) -> Path | None:
    """Add the table to results.json of the checkpoint's folder (section ``offline_knn``, with
    the best row), atomically; returns that file, or None when it cannot be read (left as it is,
    a warning names it)."""
    best = max(rows, key=lambda r: r["acc1"])
    return merge_results(
        csv_path.parent, "offline_knn", {"rows": list(rows), "best": best, "csv": str(csv_path)}
    )
