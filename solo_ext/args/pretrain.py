"""The pretraining config: defaults, validation and derived keys, all in one place.

``parse_cfg`` turns the YAML composed by Hydra into checked values. Every invalid value stops here
with a one-line ``ConfigError`` naming the key, the value and what is allowed, before anything is
written to disk. Below this module, functions take explicit arguments.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from solo_ext.args.checks import check_bool, check_choice, check_keys, check_number
from solo_ext.utils.errors import ConfigError


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# data loader workers when a recipe sets none: solo-learn's 4, never more than the CPUs
DEFAULT_WORKERS = min(4, available_cpus())

# solo-learn's schema, with its defaults (reference: solo/args/pretrain.py and the methods'
# add_and_assert_specific_cfg), gathered here instead of scattered over the classes.
# The run and Trainer keys every entry point shares.
RUN_DEFAULTS: dict[str, Any] = {
    "seed": 5,
    "resume_from_checkpoint": None,
    "max_epochs": 100,
    "devices": 1,
    "num_nodes": 1,
    "accelerator": "auto",
    "strategy": "auto",
    "precision": 32,
    "accumulate_grad_batches": 1,
}
DEFAULTS: dict[str, Any] = {
    "backbone": {"kwargs": {}},
    "method_kwargs": {},
    "data": {
        "train_path": None,
        "val_path": None,
        "format": "image_folder",
        "num_workers": DEFAULT_WORKERS,
        "fraction": -1.0,
        "no_labels": False,
    },
    "optimizer": {
        "classifier_lr": None,
        "weight_decay": 0.0,
        "kwargs": {},
        "exclude_bias_n_norm_wd": False,
    },
    "scheduler": {
        "name": "warmup_cosine",
        "warmup_epochs": 10,
        "warmup_start_lr": 3e-5,
        "min_lr": 0.0,
        "lr_decay_steps": None,
        "interval": "step",
    },
    # solo-learn's online kNN: k 20, T 0.07, euclidean; its bank is the training batches' features
    "knn_eval": {"enabled": False, "k": 20, "T": 0.07, "distance_func": "euclidean", "bank": "batches"},
    "checkpoint": {"enabled": False, "dir": "trained_models", "frequency": 1, "keep_prev": False},
    "auto_resume": {"enabled": False, "max_hours": 36},
    "wandb": {"enabled": False, "entity": None, "project": "solo-learn", "offline": False},
    "diagnostics": {
        "enabled": True,
        "max_samples": 2048,
        "spectrum_frequency": 1,
        "validate_before_training": False,
    },
    "reconstructions": {"enabled": True, "frequency": 1, "num_images": 8},
    "performance": {"disable_channel_last": False},
    # torch.compile the encoder's forward and the decoder (checkpoint keys unchanged)
    "compile": False,
    **RUN_DEFAULTS,
}

SECTION_KEYS = {
    "backbone": {"name", "kwargs"},
    "data": {
        "dataset",
        "train_path",
        "val_path",
        "format",
        "num_workers",
        "fraction",
        "no_labels",
        "tfrecord",
        # derived (re-derived when args.json is read back)
        "num_classes",
        "num_large_crops",
        "num_small_crops",
    },
    "optimizer": {
        "name",
        "batch_size",
        "lr",
        "classifier_lr",
        "weight_decay",
        "kwargs",
        "exclude_bias_n_norm_wd",
    },
    "scheduler": {"name", "warmup_epochs", "warmup_start_lr", "min_lr", "lr_decay_steps", "interval"},
    "knn_eval": {"enabled", "k", "T", "distance_func", "bank"},
    "checkpoint": {"enabled", "dir", "frequency", "keep_prev"},
    "auto_resume": {"enabled", "max_hours"},
    "wandb": {"enabled", "entity", "project", "offline"},
    "diagnostics": {"enabled", "max_samples", "spectrum_frequency", "validate_before_training"},
    "reconstructions": {"enabled", "frequency", "num_images"},
}

# Keys solo-learn and the MAGMA recipes carry that MAE does not use (momentum is copy-pasted into
# solo-learn's imagenet/mae.yaml; auto_umap needs umap-learn). Accepted so those recipes run
# unchanged; ignored.
IGNORED_TOP_LEVEL = {"momentum", "auto_umap", "performance"}
OWN_TOP_LEVEL = {
    "name",
    "method",
    "backbone",
    "method_kwargs",
    "data",
    "augmentations",
    "optimizer",
    "scheduler",
    "knn_eval",
    "checkpoint",
    "auto_resume",
    "wandb",
    "diagnostics",
    "reconstructions",
    "seed",
    "resume_from_checkpoint",
    "compile",
    "derived",
}
# The Trainer kwargs we set ourselves.
TRAINER_RESERVED = {"logger", "callbacks", "enable_checkpointing", "default_root_dir"}

OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
# What solo-learn's parse_cfg fills into optimizer.kwargs when a recipe leaves a key out (its
# solo/args/pretrain.py and linear.py); written into args.json so a run shows what it used.
OPTIMIZER_KWARGS_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9},
    "lars": {"momentum": 0.9, "eta": 1e-3, "clip_lr": False, "exclude_bias_n_norm": False},
    "adamw": {"betas": [0.9, 0.999]},
}
LR_SCHEDULERS = ("warmup_cosine", "step", "none")
# the online kNN's train bank: "batches" = the features of the epoch's training batches as the
# method sees them (solo-learn's); "clean" = the training set through the val transform (ours)
KNN_BANKS = ("batches", "clean")
PRECISIONS = {
    32: "32-true",
    "32": "32-true",
    "32-true": "32-true",
    64: "64-true",
    "64": "64-true",
    "64-true": "64-true",
    16: "16-mixed",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "16-true": "16-true",
    "bf16-true": "bf16-true",
}


def trainer_keys() -> set[str]:
    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"} - TRAINER_RESERVED


def _none_strings(node: Any) -> Any:
    """solo-learn's YAMLs write ``None`` (a string to YAML) for null; read it as null."""
    if isinstance(node, dict):
        return {k: _none_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_none_strings(v) for v in node]
    return None if node == "None" else node


def _merge_defaults(user: dict, defaults: dict) -> dict:
    out = dict(user)
    for key, value in defaults.items():
        if key not in out or (out[key] is None and isinstance(value, dict)):
            out[key] = value if not isinstance(value, dict) else dict(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge_defaults(out[key], value)
    return out


def world_size_of(devices: Any, accelerator: str, num_nodes: int) -> int:
    """Processes a run starts: devices per node x nodes (devices may be an int, a list or 'auto')."""
    if isinstance(devices, list | tuple):
        per_node = len(devices)
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        per_node = int(devices)
    elif isinstance(devices, int) and not isinstance(devices, bool):
        per_node = devices
    elif devices == "auto":
        per_node = -1
    else:
        raise ConfigError(f"devices={devices!r}: must be a positive int, -1, 'auto' or a list of device ids")
    if per_node == -1:
        per_node = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") else 1
        per_node = max(per_node, 1)
    if per_node < 1:
        raise ConfigError(f"devices={devices!r}: must be a positive int, -1, 'auto' or a list of device ids")
    return per_node * num_nodes


def parse_cfg(cfg: DictConfig | Mapping) -> DictConfig:
    """Fill defaults, validate and derive keys. Returns a new, resolved DictConfig."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else dict(cfg)
    raw = _none_strings(raw)
    for key in ("name", "method", "backbone", "data", "optimizer"):
        if raw.get(key) is None:
            raise ConfigError(f"{key}: missing; every pretraining config needs it")
    allowed_top = OWN_TOP_LEVEL | IGNORED_TOP_LEVEL | trainer_keys()
    check_keys("", raw, allowed_top)
    out = _merge_defaults(raw, DEFAULTS)

    for section, keys in SECTION_KEYS.items():
        if not isinstance(out[section], dict):
            raise ConfigError(f"{section}={out[section]!r}: must be a mapping")
        check_keys(section, out[section], keys)

    if not isinstance(out["name"], str) or not out["name"]:
        raise ConfigError(f"name={out['name']!r}: must be a non-empty string")
    check_number("seed", out["seed"], integer=True)
    check_bool("compile", out["compile"])

    from solo_ext.methods import METHODS

    check_choice("method", out["method"], METHODS)
    _check_trainer(out)
    _check_data(out)
    _check_optimizer(out)
    _check_eval(out)

    backbone = _check_backbone(out)
    method_cls = METHODS[out["method"]]
    out["method_kwargs"] = method_cls.parse_method_kwargs(out["method_kwargs"], backbone)
    _derive_lr(out)
    _derive_regularizers(out)
    _derive_protocols(out)
    return OmegaConf.create(out)


def _check_trainer(out: dict) -> None:
    check_number("max_epochs", out["max_epochs"], low=1, integer=True)
    check_number("num_nodes", out["num_nodes"], low=1, integer=True)
    check_number("accumulate_grad_batches", out["accumulate_grad_batches"], low=1, integer=True)
    precision = out["precision"]
    if precision not in PRECISIONS:
        allowed = "32, 16-mixed, bf16-mixed, 16-true, bf16-true, 64 (legacy 16 and bf16 accepted)"
        raise ConfigError(f"precision={precision!r}: must be one of {allowed}")
    out["precision"] = PRECISIONS[precision]
    accelerator = out["accelerator"]
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"accelerator={accelerator!r}: no CUDA GPU is available here; use accelerator=cpu")
    if out["precision"] == "16-mixed" and (
        accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    ):
        raise ConfigError("precision='16-mixed': needs a CUDA GPU; on the CPU use precision=bf16-mixed or 32")
    world_size = world_size_of(out["devices"], accelerator, out["num_nodes"])
    out["derived"] = {"world_size": world_size}


def check_data_section(data: dict) -> None:
    """The ``data`` keys pretraining and linear evaluation share: dataset, format, workers,
    fraction, and the paths (made absolute)."""
    from solo_ext.data import DATASETS, check_data_format, check_fraction

    if data.get("dataset") is None:
        raise ConfigError("data.dataset: missing; choose one of " + ", ".join(DATASETS))
    check_choice("data.dataset", data["dataset"], DATASETS)
    check_data_format(data["format"], key="data.format")
    check_number("data.num_workers", data["num_workers"], low=0, integer=True)
    check_fraction(data["fraction"])
    for key in ("train_path", "val_path"):
        if data[key] is not None:
            if not isinstance(data[key], str):
                raise ConfigError(f"data.{key}={data[key]!r}: must be a path string")
            data[key] = os.path.abspath(os.path.expanduser(data[key]))


def _check_data(out: dict) -> None:
    from solo_ext.data import fill_augmentation_defaults, num_classes_of

    data = out["data"]
    check_data_section(data)
    check_bool("data.no_labels", data["no_labels"])
    augmentations = out.get("augmentations")
    if not isinstance(augmentations, list) or not augmentations:
        raise ConfigError(f"augmentations={augmentations!r}: must be a non-empty list of pipelines")
    out["augmentations"] = [
        fill_augmentation_defaults(aug, key=f"augmentations[{i}]", dataset=data["dataset"])
        for i, aug in enumerate(augmentations)
    ]
    crop_sizes = [aug["crop_size"] for aug in out["augmentations"]]
    large = max(crop_sizes)
    data["num_large_crops"] = sum(a["num_crops"] for a in out["augmentations"] if a["crop_size"] == large)
    data["num_small_crops"] = sum(a["num_crops"] for a in out["augmentations"] if a["crop_size"] != large)
    data["num_classes"] = None if data["no_labels"] else num_classes_of(data["dataset"], data["train_path"])


def _check_optimizer(out: dict) -> None:
    opt = out["optimizer"]
    check_choice("optimizer.name", opt.get("name"), OPTIMIZERS)
    check_number("optimizer.batch_size", opt.get("batch_size"), low=1, integer=True)
    check_number("optimizer.lr", opt.get("lr"), low=0, low_open=True)
    if opt["classifier_lr"] is None:
        opt["classifier_lr"] = opt["lr"]
    check_number("optimizer.classifier_lr", opt["classifier_lr"], low=0, low_open=True)
    check_number("optimizer.weight_decay", opt["weight_decay"], low=0)
    check_bool("optimizer.exclude_bias_n_norm_wd", opt["exclude_bias_n_norm_wd"])
    if not isinstance(opt["kwargs"], dict):
        raise ConfigError(f"optimizer.kwargs={opt['kwargs']!r}: must be a mapping of optimizer arguments")
    opt["kwargs"] = {**OPTIMIZER_KWARGS_DEFAULTS.get(opt["name"], {}), **opt["kwargs"]}
    sched = out["scheduler"]
    check_choice("scheduler.name", sched["name"], LR_SCHEDULERS)
    check_choice("scheduler.interval", sched["interval"], ("step", "epoch"))
    check_number("scheduler.warmup_epochs", sched["warmup_epochs"], low=0)
    check_number("scheduler.warmup_start_lr", sched["warmup_start_lr"], low=0)
    check_number("scheduler.min_lr", sched["min_lr"], low=0)
    if sched["name"] == "step":
        steps = sched["lr_decay_steps"]
        if (
            not isinstance(steps, list)
            or not steps
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps)
        ):
            raise ConfigError(
                f"scheduler.lr_decay_steps={steps!r}: the step scheduler needs a list of positive epochs"
            )


def _check_eval(out: dict) -> None:
    check_knn_section(out["knn_eval"])
    ckpt = out["checkpoint"]
    check_bool("checkpoint.enabled", ckpt["enabled"])
    check_number("checkpoint.frequency", ckpt["frequency"], low=1, integer=True)
    check_bool("checkpoint.keep_prev", ckpt["keep_prev"])
    if not isinstance(ckpt["dir"], str) or not ckpt["dir"]:
        raise ConfigError(f"checkpoint.dir={ckpt['dir']!r}: must be a folder path")
    ckpt["dir"] = os.path.abspath(os.path.expanduser(ckpt["dir"]))
    check_bool("auto_resume.enabled", out["auto_resume"]["enabled"])
    check_number("auto_resume.max_hours", out["auto_resume"]["max_hours"], low=0, low_open=True)
    wandb = out["wandb"]
    check_bool("wandb.enabled", wandb["enabled"])
    check_bool("wandb.offline", wandb["offline"])
    diag = out["diagnostics"]
    check_bool("diagnostics.enabled", diag["enabled"])
    check_number("diagnostics.max_samples", diag["max_samples"], low=2, integer=True)
    check_bool("diagnostics.validate_before_training", diag["validate_before_training"])
    check_number("diagnostics.spectrum_frequency", diag["spectrum_frequency"], low=1, integer=True)
    rec = out["reconstructions"]
    check_bool("reconstructions.enabled", rec["enabled"])
    check_number("reconstructions.frequency", rec["frequency"], low=1, integer=True)
    check_number("reconstructions.num_images", rec["num_images"], low=1, high=64, integer=True)
    if out["resume_from_checkpoint"] is not None:
        path = out["resume_from_checkpoint"]
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ConfigError(f"resume_from_checkpoint={path!r}: no such checkpoint file")
        out["resume_from_checkpoint"] = os.path.abspath(path)


def _check_backbone(out: dict) -> torch.nn.Module:
    """Validate backbone.name/kwargs by building the model on the meta device (no memory, no time)."""
    from solo_ext.backbones import build_backbone

    backbone_cfg = out["backbone"]
    if not isinstance(backbone_cfg.get("kwargs"), dict):
        raise ConfigError(f"backbone.kwargs={backbone_cfg.get('kwargs')!r}: must be a mapping")
    crop_size = max(aug["crop_size"] for aug in out["augmentations"])
    with torch.device("meta"):
        backbone = build_backbone(backbone_cfg.get("name"), backbone_cfg["kwargs"])
    if backbone.img_size != crop_size:
        raise ConfigError(
            f"backbone.kwargs.img_size={backbone.img_size!r}: must equal the largest augmentations "
            f"crop_size ({crop_size}); set backbone.kwargs.img_size={crop_size}"
        )
    return backbone


def _derive_lr(out: dict) -> None:
    """Scale every lr (min_lr and warmup_start_lr included) by batch_size x world_size x
    accumulate_grad_batches / 256. solo-learn scales only lr and classifier_lr by the batch and
    multiplies all four by accumulate_grad_batches (README, Recipes). The user's values stay as
    written, the effective ones go to ``derived`` and are logged."""
    opt, sched, derived = out["optimizer"], out["scheduler"], out["derived"]
    global_batch = opt["batch_size"] * derived["world_size"] * out["accumulate_grad_batches"]
    scale = global_batch / 256
    derived.update(
        global_batch_size=global_batch,
        lr_scale=scale,
        lr=opt["lr"] * scale,
        classifier_lr=opt["classifier_lr"] * scale,
        min_lr=sched["min_lr"] * scale,
        warmup_start_lr=sched["warmup_start_lr"] * scale,
    )


def _peak_weight(scheduler: Mapping, max_epochs: int) -> float:
    """The largest weight a schedule reaches in the run (sampled at quarter epochs)."""
    from solo_ext.regularizers.base import build_schedule

    schedule = build_schedule(scheduler, "scheduler")
    return max(schedule(0, quarter / 4) for quarter in range(4 * max_epochs + 1))


def _derive_regularizers(out: dict) -> None:
    """Per regularizer: the batch it sees (the per-process batch, times the processes when it
    gathers; gradient accumulation does not enlarge it) and its weight. Our gather sums the
    gradient, so the weight acts as written on any number of processes; the U-MAE and M-MAE code
    (whose gather returns the local slice) would need ``lamb = weight x processes`` for the same
    run, stored as ``upstream_lamb``."""
    regularizers = out["method_kwargs"].get("regularizers") or {}
    derived = out["derived"]
    per_process, world = out["optimizer"]["batch_size"], derived["world_size"]
    derived["regularizers"] = {
        name: {
            "batch": per_process * world if spec["gather"] else per_process,
            "gather": spec["gather"],
            "effective_weight": (peak := _peak_weight(spec["scheduler"], out["max_epochs"])),
            "upstream_lamb": peak * world if spec["gather"] else peak,
        }
        for name, spec in regularizers.items()
    }


def _derive_protocols(out: dict) -> None:
    """How the online numbers are measured, in words stored in args.json and printed."""
    features = out["method_kwargs"].get("online_features", "cls")
    knn = out["knn_eval"]
    derived = out["derived"]
    derived["protocols"] = {"online_linear": f"linear probe on detached {features} features"}
    if knn["enabled"]:
        batches = "training batches of the epoch as the method sees them (solo-learn)"
        derived["protocols"]["online_knn"] = knn_protocol(features, knn, batches)


def knn_protocol(features: str, knn: Mapping, batches: str) -> str:
    """One line naming a weighted-kNN protocol: features, k, T, distance and bank (``batches``
    describes the caller's training batches, for ``bank: batches``)."""
    bank = batches if knn["bank"] == "batches" else "clean training set through the val transform"
    temperature = f", T {knn['T']}" if knn["distance_func"] == "cosine" else ""
    distance = knn["distance_func"]
    return f"weighted kNN on {features} features, k {knn['k']}{temperature}, {distance}; bank: {bank}"


def check_knn_section(knn: dict) -> None:
    """The ``knn_eval`` keys pretraining and linear evaluation share."""
    check_bool("knn_eval.enabled", knn["enabled"])
    check_number("knn_eval.k", knn["k"], low=1, integer=True)
    check_number("knn_eval.T", knn["T"], low=0, low_open=True)
    check_choice("knn_eval.distance_func", knn["distance_func"], ("cosine", "euclidean"))
    check_choice("knn_eval.bank", knn["bank"], KNN_BANKS)
