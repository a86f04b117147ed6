"""The pretraining config: compatibility pass, validation against the declared schema, derived keys.

``parse_cfg`` turns the YAML composed by Hydra into a checked, resolved DictConfig. Every invalid
value stops here with a one-line ``ConfigError`` naming the key as the user wrote it, the value
and what is allowed, before anything is written to disk. Below this layer, code takes validated
values and checks nothing of the user's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from solo_ext.config.compat import magma_flat_keys, plain_config
from solo_ext.config.errors import validate
from solo_ext.config.lightning import RESOLVED_KEYS, resolve_trainer
from solo_ext.config.paths import resolve_weights_path
from solo_ext.config.schema import METHOD_KWARGS, LinearConfig, PretrainConfig, _Run
from solo_ext.data.augmentations import crop_size_of
from solo_ext.data.info import num_classes_of
from solo_ext.methods.mae import MAEKwargs
from solo_ext.schedulers.weights import WeightSchedule


def parse_cfg(cfg: DictConfig | Mapping, plugins: list | None = None) -> DictConfig:
    """Fill defaults, validate and derive keys. Returns a new, resolved DictConfig. ``plugins``:
    the Lightning plugins the run's Trainer gets (see :func:`resolve_trainer`)."""
    return parse_run(cfg, plugins)[0]


def parse_run(cfg: DictConfig | Mapping, plugins: list | None = None) -> tuple[DictConfig, MAEKwargs]:
    """:func:`parse_cfg`'s config, and its ``method_kwargs`` as validated (the method's ``Kwargs``,
    which the runner hands the method: each regularizer's weight schedule is built once, here)."""
    raw = plain_config(cfg)
    mk_raw, renames = magma_flat_keys(raw.get("method_kwargs", {}), raw.get("method"))
    top = validate(PretrainConfig, {**raw, "method_kwargs": mk_raw if isinstance(mk_raw, dict) else {}})
    trainer = derive_trainer(top, plugins)
    mk = validate(
        METHOD_KWARGS[top.method], mk_raw, "method_kwargs", context=top.backbone.context(), renames=renames
    )
    if mk.init_from is not None:
        mk.init_from = resolve_weights_path("method_kwargs.init_from", mk.init_from)

    out = top.model_dump()
    out["backbone"] = top.backbone.dump()
    out["method_kwargs"] = mk.dump()
    data = out["data"]
    for aug in out["augmentations"]:
        aug["crop_size"] = crop_size_of(aug["crop_size"], data["dataset"])
    large = max(aug["crop_size"] for aug in out["augmentations"])
    data["num_large_crops"] = sum(a["num_crops"] for a in out["augmentations"] if a["crop_size"] == large)
    data["num_small_crops"] = sum(a["num_crops"] for a in out["augmentations"] if a["crop_size"] != large)
    data["num_classes"] = None if data["no_labels"] else num_classes_of(data["dataset"], data["train_path"])
    out["derived"] = {**trainer, **derive_lr(top, trainer["world_size"], classifier=True)}
    derive_regularizers(out, mk)
    features = out["method_kwargs"]["online_features"]
    out["derived"]["protocols"] = {"online_linear": f"linear probe on detached {features} features"}
    if top.knn_eval.enabled:
        batches = "training batches of the epoch as the method sees them (solo-learn)"
        out["derived"]["protocols"]["online_knn"] = knn_protocol(features, out["knn_eval"], batches)
    return OmegaConf.create(out), mk


def derive_trainer(run: _Run, plugins: list | None = None) -> dict[str, Any]:
    """What Lightning makes of the run's Trainer keys (see :func:`resolve_trainer`): the number of
    processes (``world_size``) and the precision it computes at, the start of ``derived``."""
    resolved = resolve_trainer({key: getattr(run, key) for key in RESOLVED_KEYS}, plugins)
    return {"world_size": resolved.world_size, "precision": resolved.precision}


def derive_lr(run: PretrainConfig | LinearConfig, world_size: int, classifier: bool) -> dict[str, Any]:
    """Scale every lr (min_lr and warmup_start_lr included) by batch_size x world_size x
    accumulate_grad_batches / 256. solo-learn scales only lr and classifier_lr by the batch and
    multiplies all four by accumulate_grad_batches (README, Recipes). The user's values stay as
    written, the effective ones go to ``derived`` and are logged."""
    optimizer = run.optimizer
    assert optimizer is not None, "derive_lr needs an optimizer section (mode=probe has none)"
    global_batch = optimizer.batch_size * world_size * run.accumulate_grad_batches
    scale = global_batch / 256
    derived = {
        "global_batch_size": global_batch,
        "lr_scale": scale,
        "lr": optimizer.lr * scale,
        "min_lr": run.scheduler.min_lr * scale,
        "warmup_start_lr": run.scheduler.warmup_start_lr * scale,
    }
    if classifier:
        # a pretraining run: its classifier_lr, filled with the lr by validation when not given
        assert isinstance(run, PretrainConfig) and run.optimizer.classifier_lr is not None
        derived["classifier_lr"] = run.optimizer.classifier_lr * scale
    return derived


def _peak_weight(schedule: WeightSchedule, max_epochs: int) -> float:
    """The largest weight a schedule reaches in the run (sampled at quarter epochs)."""
    return max(schedule(0, quarter / 4) for quarter in range(4 * max_epochs + 1))


def derive_regularizers(out: dict, mk: MAEKwargs) -> None:
    """Per regularizer: the batch it sees (the per-process batch, times the processes when it
    gathers; gradient accumulation does not enlarge it) and its weight. Our gather sums the
    gradient, so the weight acts as written on any number of processes; the U-MAE and M-MAE code
    (whose gather returns the local slice) would need ``lamb = weight x processes`` for the same
    run, stored as ``upstream_lamb``."""
    derived = out["derived"]
    per_process, world = out["optimizer"]["batch_size"], derived["world_size"]
    derived["regularizers"] = {
        name: {
            "batch": per_process * world if spec.gather else per_process,
            "gather": spec.gather,
            "effective_weight": (peak := _peak_weight(spec.schedule, out["max_epochs"])),
            "upstream_lamb": peak * world if spec.gather else peak,
        }
        for name, spec in mk.regularizer_specs().items()
    }


def knn_protocol(features: str, knn: Mapping, batches: str) -> str:
    """One line naming a weighted-kNN protocol: features, k, T, distance and bank (``batches``
    describes the caller's training batches, for ``bank: batches``)."""
    bank = batches if knn["bank"] == "batches" else "clean training set through the val transform"
    if knn["bank"] == "batches" and knn.get("max_bank") is not None:
        bank += f", a uniform sample of at most {knn['max_bank']} rows per process"
    temperature = f", T {knn['T']}" if knn["distance_func"] == "cosine" else ""
    distance = knn["distance_func"]
    return f"weighted kNN on {features} features, k {knn['k']}{temperature}, {distance}; bank: {bank}"
