"""The offline-evaluation config (``main_linear.py``): defaults, validation and derived keys.

solo-learn's linear/fine-tune schema (reference: solo/args/linear.py) plus four keys of ours:

- ``mode``: ``linear`` (frozen backbone, linear head), ``partial`` (the last ``partial_blocks``
  blocks and the final norm train; 0.5 = only the MLP sub-block of the last block, as in MAE's
  partial fine-tuning, He et al. 2022, Fig. 9) or ``finetune`` (everything trains). Defaults to
  ``finetune`` when solo-learn's ``finetune: True`` is set, else ``linear``.
- ``features``: ``cls`` (class token) or ``mean`` (mean patch token), after the final norm.
- ``batchnorm_head``: BatchNorm1d without affine parameters before the linear head (MAE's probe).
- ``allow_random_backbone``: the only way to run with ``pretrained_feature_extractor: null``.

``pretrained_feature_extractor`` is a ``.ckpt``/``.pth``/``.pt`` file or a run folder (its newest
checkpoint is taken).

When ``backbone.name`` is not given it is read, with ``backbone.kwargs``, from the ``args.json``
that solo-ext and solo-learn write beside their checkpoints; ``backbone.kwargs`` given here then
override the saved ones (e.g. ``drop_path_rate`` for fine-tuning). As in pretraining, every
invalid value stops here with a one-line ``ConfigError`` before anything is written.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from solo_ext.args.checks import check_bool, check_choice, check_keys, check_number
from solo_ext.args.pretrain import (
    DEFAULT_WORKERS,
    IGNORED_TOP_LEVEL,
    RUN_DEFAULTS,
    _check_optimizer,
    _check_trainer,
    _merge_defaults,
    _none_strings,
    check_data_section,
    check_knn_section,
    knn_protocol,
    trainer_keys,
)
from solo_ext.args.pretrain import DEFAULTS as PRETRAIN_DEFAULTS
from solo_ext.args.pretrain import SECTION_KEYS as PRETRAIN_SECTION_KEYS
from solo_ext.backbones.interop import backbone_from_hf_config
from solo_ext.backbones.vit import POOL_MODES, MaskedViT
from solo_ext.utils.checkpoint_loading import resolve_weights_path
from solo_ext.utils.errors import ConfigError

MODES = ("linear", "partial", "finetune")
# The folder under checkpoint.dir that holds every offline-evaluation run (solo-learn's
# trained_models/linear/<run id>/); stored as cfg.method so the pretraining run helpers apply.
RUN_FOLDER = "linear"

DEFAULTS: dict[str, Any] = {
    "pretrained_feature_extractor": None,
    "allow_random_backbone": False,
    "pretrain_method": None,
    "backbone": {"name": None, "kwargs": {}},
    "mode": None,
    "partial_blocks": None,
    # None: the pretraining run's own (its online probe's features, from args.json), else cls
    "features": None,
    "batchnorm_head": False,
    "finetune": False,
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "auto_augment": False,
    "data": {
        "train_path": None,
        "val_path": None,
        "format": "image_folder",
        "num_workers": DEFAULT_WORKERS,
        "fraction": -1.0,
    },
    "optimizer": {"weight_decay": 0.0, "kwargs": {}, "layer_decay": 0.0, "exclude_bias_n_norm_wd": False},
    "scheduler": PRETRAIN_DEFAULTS["scheduler"],
    "knn_eval": PRETRAIN_DEFAULTS["knn_eval"],
    "diagnostics": {"enabled": True, "max_samples": 2048},
    "checkpoint": PRETRAIN_DEFAULTS["checkpoint"],
    "auto_resume": PRETRAIN_DEFAULTS["auto_resume"],
    "wandb": PRETRAIN_DEFAULTS["wandb"],
    **RUN_DEFAULTS,
}

SECTION_KEYS = {
    "backbone": {"name", "kwargs"},
    # num_classes is derived; accepted so that a run's args.json can be read back
    "data": {"dataset", "train_path", "val_path", "format", "num_workers", "fraction", "num_classes"},
    "optimizer": {
        "name",
        "batch_size",
        "lr",
        "weight_decay",
        "kwargs",
        "layer_decay",
        "exclude_bias_n_norm_wd",
    },
    "scheduler": PRETRAIN_SECTION_KEYS["scheduler"],
    "knn_eval": PRETRAIN_SECTION_KEYS["knn_eval"],
    "diagnostics": {"enabled", "max_samples"},
    "checkpoint": PRETRAIN_SECTION_KEYS["checkpoint"],
    "auto_resume": PRETRAIN_SECTION_KEYS["auto_resume"],
    "wandb": PRETRAIN_SECTION_KEYS["wandb"],
}
OWN_TOP_LEVEL = set(DEFAULTS) | {"name", "data", "optimizer", "derived", "method"}


def saved_run_args(checkpoint: str | os.PathLike, key: str = "pretrained_feature_extractor") -> dict | None:
    """The ``args.json`` beside ``checkpoint`` (solo-ext and solo-learn runs), or None if absent.

    Raises:
        ConfigError: the file exists but is not a JSON mapping (the message names ``key``).
    """
    folder = Path(checkpoint).parent
    path = folder / "args.json"
    if not path.is_file():
        return exported_run_args(folder)
    try:
        args = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}='{checkpoint}': cannot read {path} ({err})") from err
    if not isinstance(args, dict):
        raise ConfigError(f"{key}='{checkpoint}': {path} is not a JSON mapping")
    return args


def exported_run_args(folder: Path) -> dict | None:
    """What a folder without args.json says about its model: a solo_ext.export folder's
    export.json, or a Hugging Face ViTMAE folder's config.json (the backbone only)."""
    export_json, hf_json = folder / "export.json", folder / "config.json"
    if export_json.is_file():
        arch = json.loads(export_json.read_text()).get("architecture") or {}
        return {"backbone": arch.get("backbone"), "method": "mae"} if arch.get("backbone") else None
    if hf_json.is_file():
        config = json.loads(hf_json.read_text())
        if config.get("model_type") == "vit_mae":
            return {"backbone": backbone_from_hf_config(config), "method": "mae"}
    return None


def parse_cfg(cfg: DictConfig | Mapping) -> DictConfig:
    """Fill defaults, validate and derive keys. Returns a new, resolved DictConfig.

    Derived: ``mode`` and ``finetune`` (consistent), ``backbone`` (completed from args.json),
    ``pretrain_method``, ``data.num_classes``, ``derived.{world_size, global_batch_size,
    lr_scale, lr, min_lr, warmup_start_lr}``, and ``method: linear`` (the run folder).
    """
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else dict(cfg)
    raw = _none_strings(copy.deepcopy(raw))
    for key in ("name", "data", "optimizer"):
        if raw.get(key) is None:
            raise ConfigError(f"{key}: missing; every linear/fine-tuning config needs it")
    if raw.get("method", RUN_FOLDER) != RUN_FOLDER:
        raise ConfigError(
            f"method={raw['method']!r}: not a linear-evaluation key; the pretraining method goes in "
            "pretrain_method"
        )
    check_keys("", raw, OWN_TOP_LEVEL | IGNORED_TOP_LEVEL | trainer_keys())
    user_knn = dict(raw.get("knn_eval") or {})
    out = _merge_defaults(raw, copy.deepcopy(DEFAULTS))
    for section, keys in SECTION_KEYS.items():
        if not isinstance(out[section], dict):
            raise ConfigError(f"{section}={out[section]!r}: must be a mapping")
        check_keys(section, out[section], keys)
    if not isinstance(out["name"], str) or not out["name"]:
        raise ConfigError(f"name={out['name']!r}: must be a non-empty string")
    check_number("seed", out["seed"], integer=True)
    out["method"] = RUN_FOLDER

    _check_trainer(out)
    _check_checkpoint(out)
    _check_data(out)
    saved = (
        saved_run_args(out["pretrained_feature_extractor"]) if out["pretrained_feature_extractor"] else None
    )
    _follow_run(out, saved, user_knn)
    backbone = _check_backbone(out, saved)
    _check_mode(out, backbone)
    # the pretraining check covers every optimizer and scheduler key but classifier_lr, which
    # linear configs do not have: it sees a copy with it unset, and the optimizer.kwargs it fills
    # (solo-learn's defaults) are kept
    checked = {**out, "optimizer": {**out["optimizer"], "classifier_lr": None}}
    _check_optimizer(checked)
    out["optimizer"]["kwargs"] = checked["optimizer"]["kwargs"]
    _check_layer_decay(out)
    _check_loss(out)
    _check_eval(out)
    _derive_lr(out)
    out["derived"]["protocols"] = linear_protocols(out)
    return OmegaConf.create(out)


def _follow_run(out: dict, saved: Mapping | None, user_knn: Mapping) -> None:
    """Offline evaluation measures what the run measured online unless told otherwise: the
    features of its online probe and its kNN k, T and distance, from its args.json."""
    saved = saved or {}
    if out["features"] is None:
        out["features"] = (saved.get("method_kwargs") or {}).get("online_features") or "cls"
    saved_knn = saved.get("knn_eval") or {}
    for key in ("k", "T", "distance_func"):
        if key not in user_knn and key in saved_knn:
            out["knn_eval"][key] = saved_knn[key]


def linear_protocols(out: Mapping) -> dict:
    """The evaluation protocols of a linear/fine-tuning run, in words (args.json and logs)."""
    head = "BatchNorm (no affine) + linear head" if out["batchnorm_head"] else "linear head"
    protocols = {"linear": f"{out['mode']} on {out['features']} features, {head}"}
    knn = out["knn_eval"]
    if knn["enabled"]:
        batches = "training batches of the epoch (train transform)"
        protocols["knn"] = knn_protocol(out["features"], knn, batches)
    return protocols


def _check_checkpoint(out: dict) -> None:
    path = out["pretrained_feature_extractor"]
    if check_bool("allow_random_backbone", out["allow_random_backbone"]) and path is None:
        return
    if path is None:
        raise ConfigError(
            "pretrained_feature_extractor=None: no checkpoint given; pass "
            "pretrained_feature_extractor=<.ckpt, .pth or .pt file>, or ++allow_random_backbone=True to "
            "evaluate a randomly initialised backbone (a baseline)"
        )
    # a run folder stands for its newest checkpoint (which also spares users Hydra's override
    # grammar, in which the '=' of '<name>-<run id>-ep=<E>.ckpt' must be quoted), an export or
    # Hugging Face folder for its model.safetensors
    path = resolve_weights_path("pretrained_feature_extractor", path)
    out["pretrained_feature_extractor"] = path


def _check_data(out: dict) -> None:
    from solo_ext.data import num_classes_of

    data = out["data"]
    check_data_section(data)
    data["num_classes"] = num_classes_of(data["dataset"], data["train_path"])


def _check_backbone(out: dict, saved: Mapping | None) -> MaskedViT:
    """Complete ``backbone`` from the checkpoint's args.json (``saved``) when its name is not
    given, and validate it by building the model on the meta device (no memory, no time)."""
    from solo_ext.backbones import build_backbone

    backbone_cfg = out["backbone"]
    if not isinstance(backbone_cfg.get("kwargs"), dict):
        raise ConfigError(f"backbone.kwargs={backbone_cfg.get('kwargs')!r}: must be a mapping")
    checkpoint = out["pretrained_feature_extractor"]
    if backbone_cfg.get("name") is None:
        saved_backbone = (saved or {}).get("backbone")
        if not isinstance(saved_backbone, dict) or saved_backbone.get("name") is None:
            where = f"no args.json with a backbone beside '{checkpoint}'" if checkpoint else "no checkpoint"
            raise ConfigError(
                f"backbone.name: missing and {where} to read it from; set backbone.name and backbone.kwargs "
                "(those the checkpoint was trained with)"
            )
        backbone_cfg["name"] = saved_backbone["name"]
        backbone_cfg["kwargs"] = {**(saved_backbone.get("kwargs") or {}), **backbone_cfg["kwargs"]}
        if out["pretrain_method"] is None:
            out["pretrain_method"] = saved.get("method")
    with torch.device("meta"):
        return build_backbone(backbone_cfg["name"], backbone_cfg["kwargs"])


def _check_mode(out: dict, backbone: MaskedViT) -> None:
    finetune = check_bool("finetune", out["finetune"])
    mode = out["mode"]
    if mode is None:
        mode = "finetune" if finetune else "linear"
    check_choice("mode", mode, MODES)
    if finetune and mode != "finetune":
        raise ConfigError(f"finetune=True: contradicts mode={mode!r}; drop finetune or set mode=finetune")
    out["mode"], out["finetune"] = mode, mode == "finetune"

    blocks = out["partial_blocks"]
    depth = backbone.depth
    if mode == "partial":
        allowed = f"0.5 (the MLP of the last block) or an integer in [1, {depth}] (the backbone's depth)"
        if blocks is None:
            raise ConfigError(
                f"partial_blocks=None: mode=partial needs the number of last blocks to train: {allowed}"
            )
        whole = isinstance(blocks, int) and not isinstance(blocks, bool) and 1 <= blocks <= depth
        if not (whole or (isinstance(blocks, float) and blocks == 0.5)):
            raise ConfigError(f"partial_blocks={blocks!r}: must be {allowed}")
    elif blocks is not None:
        raise ConfigError(
            f"partial_blocks={blocks!r}: only used with mode=partial (mode is {mode!r}); remove it"
        )
    check_choice("features", out["features"], POOL_MODES)
    check_bool("batchnorm_head", out["batchnorm_head"])


def _check_loss(out: dict) -> None:
    check_number("label_smoothing", out["label_smoothing"], low=0, high=1, high_open=True)
    check_number("mixup", out["mixup"], low=0)
    check_number("cutmix", out["cutmix"], low=0)
    check_bool("auto_augment", out["auto_augment"])
    batch_size = out["optimizer"]["batch_size"]
    mixing = out["mixup"] > 0 or out["cutmix"] > 0
    if mixing and out["knn_eval"]["enabled"] and out["knn_eval"]["bank"] == "batches":
        raise ConfigError(
            "knn_eval.bank='batches': mixup/cutmix blend the training images and their labels, so they "
            "cannot fill a kNN bank; use knn_eval.bank=clean"
        )
    if mixing and batch_size % 2:
        raise ConfigError(
            f"optimizer.batch_size={batch_size!r}: mixup/cutmix mix each batch with its reverse and need an "
            "even batch size"
        )


def _check_layer_decay(out: dict) -> None:
    decay = check_number("optimizer.layer_decay", out["optimizer"]["layer_decay"], low=0, high=1)
    if decay > 0 and out["mode"] == "linear":
        raise ConfigError(
            f"optimizer.layer_decay={decay!r}: only applies when backbone blocks train (mode=partial or "
            "finetune); set it to 0 for a linear probe"
        )


def _check_eval(out: dict) -> None:
    check_knn_section(out["knn_eval"])
    check_bool("diagnostics.enabled", out["diagnostics"]["enabled"])
    check_number("diagnostics.max_samples", out["diagnostics"]["max_samples"], low=2, integer=True)
    ckpt = out["checkpoint"]
    check_bool("checkpoint.enabled", ckpt["enabled"])
    check_number("checkpoint.frequency", ckpt["frequency"], low=1, integer=True)
    check_bool("checkpoint.keep_prev", ckpt["keep_prev"])
    if not isinstance(ckpt["dir"], str) or not ckpt["dir"]:
        raise ConfigError(f"checkpoint.dir={ckpt['dir']!r}: must be a folder path")
    ckpt["dir"] = os.path.abspath(os.path.expanduser(ckpt["dir"]))
    check_bool("auto_resume.enabled", out["auto_resume"]["enabled"])
    check_number("auto_resume.max_hours", out["auto_resume"]["max_hours"], low=0, low_open=True)
    check_bool("wandb.enabled", out["wandb"]["enabled"])
    check_bool("wandb.offline", out["wandb"]["offline"])
    path = out["resume_from_checkpoint"]
    if path is not None:
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ConfigError(f"resume_from_checkpoint={path!r}: no such checkpoint file")
        out["resume_from_checkpoint"] = os.path.abspath(path)


def _derive_lr(out: dict) -> None:
    """Scale lr, min_lr and warmup_start_lr by batch_size x world_size x accumulate_grad_batches /
    256, as pretraining does; the values written stay as they are, the effective ones go to
    ``derived``."""
    opt, sched, derived = out["optimizer"], out["scheduler"], out["derived"]
    global_batch = opt["batch_size"] * derived["world_size"] * out["accumulate_grad_batches"]
    scale = global_batch / 256
    derived.update(
        global_batch_size=global_batch,
        lr_scale=scale,
        lr=opt["lr"] * scale,
        min_lr=sched["min_lr"] * scale,
        warmup_start_lr=sched["warmup_start_lr"] * scale,
    )
