"""The offline-evaluation config (``main_linear.py``): compatibility pass, validation, derived keys.

solo-learn's linear/fine-tune schema (reference: solo/args/linear.py) plus five keys of ours:

- ``mode``: ``linear`` (frozen backbone, linear head), ``partial`` (the last ``partial_blocks``
  blocks and the final norm train; 0.5 = only the MLP sub-block of the last block, as in MAE's
  partial fine-tuning, He et al. 2022, Fig. 9), ``finetune`` (everything trains) or ``probe``
  (frozen features extracted once, a grid of linear heads chosen on held-out training images:
  :mod:`solo_ext.run.probe`; it reads ``probe`` and no ``optimizer``). Defaults to ``finetune``
  when solo-learn's ``finetune: True`` is set, else ``linear``.
- ``probe``: the grid and its training, for ``mode: probe``.
- ``features``: ``cls`` (class token) or ``mean`` (mean patch token), after the final norm.
- ``batchnorm_head``: BatchNorm1d without affine parameters before the linear head (MAE's probe).
- ``allow_random_backbone``: the only way to run with ``pretrained_feature_extractor: null``.

``pretrained_feature_extractor`` is a ``.ckpt``/``.pth``/``.pt``/``.safetensors`` file, a run
folder (its newest checkpoint is taken), an export or Hugging Face folder, or ``hf-hub:ORG/NAME``
(see :func:`solo_ext.config.paths.resolve_weights_path`).

When ``backbone.name`` is not given it is read, with ``backbone.kwargs``, from the ``args.json``
that solo-ext and solo-learn write beside their checkpoints (or an export's ``export.json``, a
ViTMAE or timm folder's ``config.json``); ``backbone.kwargs`` given here then
override the saved ones (e.g. ``drop_path_rate`` for fine-tuning). As in pretraining, every
invalid value stops here with a one-line ``ConfigError`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from solo_ext.config.compat import plain_config
from solo_ext.config.errors import fail, validate
from solo_ext.config.paths import resolve_weights_path, saved_run_args
from solo_ext.config.pretrain import derive_lr, derive_trainer, knn_protocol
from solo_ext.config.schema import LinearConfig
from solo_ext.data.info import num_classes_of
from solo_ext.utils.errors import NO_VALUE

# The folder under checkpoint.dir that holds every offline-evaluation run (solo-learn's
# trained_models/linear/<run id>/); stored as cfg.method so the pretraining run helpers apply.
RUN_FOLDER = "linear"


def parse_cfg(cfg: DictConfig | Mapping, plugins: list | None = None) -> DictConfig:
    """Fill defaults, validate and derive keys. Returns a new, resolved DictConfig.

    Derived: ``mode`` and ``finetune`` (consistent), ``backbone`` (completed from args.json),
    ``pretrain_method``, ``data.num_classes``, ``derived.{world_size, precision,
    global_batch_size, lr_scale, lr, min_lr, warmup_start_lr}``, and ``method: linear`` (the run folder).
    """
    raw = plain_config(cfg)
    path = raw.get("pretrained_feature_extractor")
    if path is None and raw.get("allow_random_backbone") is not True:
        raise fail(
            "pretrained_feature_extractor",
            None,
            "no checkpoint given; pass pretrained_feature_extractor=<.ckpt, .pth or .pt file>, or "
            "++allow_random_backbone=True to evaluate a randomly initialised backbone (a baseline)",
        )
    saved = None
    if path is not None:
        # a run folder stands for its newest checkpoint (which also spares users Hydra's override
        # grammar, in which the '=' of '<name>-<run id>-ep=<E>.ckpt' must be quoted), an export or
        # Hugging Face folder for its model.safetensors
        raw["pretrained_feature_extractor"] = path = resolve_weights_path(
            "pretrained_feature_extractor", path
        )
        saved = saved_run_args(path)
    _follow_run(raw, saved or {})
    top = validate(LinearConfig, raw)
    trainer = derive_trainer(top, plugins)

    out = top.model_dump()
    out["backbone"] = top.backbone.dump()
    out["data"]["num_classes"] = num_classes_of(top.data.dataset, top.data.train_path)
    out["derived"] = dict(trainer)
    if top.optimizer is not None:  # mode=probe has none: its grid carries its own lrs
        out["derived"].update(derive_lr(top, trainer["world_size"], classifier=False))
    out["derived"]["protocols"] = linear_protocols(out)
    return OmegaConf.create(out)


def _follow_run(raw: dict, saved: Mapping) -> None:
    """Complete the config from the pretraining run (its args.json): the backbone when no
    ``backbone.name`` is given, and, unless told otherwise, what the run measured online: the
    features of its online probe and its kNN k, T and distance."""
    backbone = raw.get("backbone")
    backbone = backbone if isinstance(backbone, dict) else {}
    if backbone.get("name") is None:
        saved_backbone = saved.get("backbone")
        if not isinstance(saved_backbone, dict) or saved_backbone.get("name") is None:
            checkpoint = raw.get("pretrained_feature_extractor")
            where = f"no args.json with a backbone beside '{checkpoint}'" if checkpoint else "no checkpoint"
            raise fail(
                "backbone.name",
                NO_VALUE,
                f"missing and {where} to read it from; set backbone.name and backbone.kwargs",
            )
        kwargs = backbone.get("kwargs")
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        raw["backbone"] = {
            "name": saved_backbone["name"],
            "kwargs": {**(saved_backbone.get("kwargs") or {}), **kwargs},
        }
        if raw.get("pretrain_method") is None:
            raw["pretrain_method"] = saved.get("method")
    if raw.get("features") is None:
        raw["features"] = (saved.get("method_kwargs") or {}).get("online_features") or "cls"
    knn = raw.get("knn_eval")
    saved_knn = saved.get("knn_eval") or {}
    if knn is None or isinstance(knn, dict):
        raw["knn_eval"] = {
            **{k: saved_knn[k] for k in ("k", "T", "distance_func") if k in saved_knn},
            **(knn or {}),
        }


def linear_protocols(out: Mapping) -> dict:
    """The evaluation protocols of a linear/fine-tuning run, in words (args.json and logs)."""
    if out["mode"] == "probe":
        return {"linear": probe_protocol(out["features"], out["probe"])}
    head = "BatchNorm (no affine) + linear head" if out["batchnorm_head"] else "linear head"
    protocols = {"linear": f"{out['mode']} on {out['features']} features, {head}"}
    knn = out["knn_eval"]
    if knn["enabled"]:
        batches = "training batches of the epoch (train transform)"
        protocols["knn"] = knn_protocol(out["features"], knn, batches)
    return protocols


def probe_protocol(features: str, probe: Mapping) -> str:
    """One line naming the offline probe's protocol (not the setting it chose, which varies by
    checkpoint): what two probes must share to be compared."""
    views = (
        "clean training images"
        if probe["train_views"] == "clean"
        else (
            f"{probe['num_views']} view(s) of the training images through the run's pretraining augmentation"
        )
    )
    heads = len(set(probe["lrs"])) * len(set(probe["weight_decays"])) * len(set(probe["batchnorm"]))
    return (
        f"probe on frozen {features} features of {views}: {heads} linear heads (lr {probe['lrs']} x weight "
        f"decay {probe['weight_decays']} x BatchNorm {probe['batchnorm']}), SGD {probe['epochs']} epochs, "
        f"batch {probe['batch_size']}, chosen on {probe['holdout_fraction']:g} of the training set held out"
    )
