"""Export a pretrained encoder (and decoder) for other code: timm, Hugging Face or facebookresearch/mae.

    python -m solo_ext.export RUN_DIR_OR_CKPT --to timm|hf|mae --out DIR [--license ID]

- ``timm``: timm's own hub layout, written by ``timm.models.save_for_hf``: ``config.json``
  (``architecture``, ``model_args``, ``pretrained_cfg`` with the run's input size, mean, std and
  crop) and ``model.safetensors``; ``timm.create_model("local-dir:DIR", pretrained=True)`` loads it.
- ``hf``: ``config.json`` + ``model.safetensors`` of ``transformers.ViTMAEForPreTraining``
  (encoder and decoder) and ``preprocessor_config.json`` (a ``ViTImageProcessor`` with the run's
  size, mean and std), so ``AutoModel``, ``AutoImageProcessor`` and
  ``pipeline("image-feature-extraction")`` take the folder. The config's ``mask_ratio`` is 0 so
  that features are those of the whole image; continue pretraining with
  ``ViTMAEForPreTraining.from_pretrained(DIR, mask_ratio=<the run's>)``. Needs ``transformers``
  (``pip install -e ".[interop]"``).
- ``mae``: facebookresearch/mae's ``{"model": ...}`` as ``checkpoint.pth`` (its fine-tuning code
  reads ``--finetune checkpoint.pth``) and the same tensors as ``model.safetensors``.

Every export writes ``export.json`` (format, architecture, image and patch size, the source
checkpoint and its epoch, the SHA-256 of the run's ``args.json``) and a model card ``README.md``
in the Hugging Face hub's format, so ``hf upload ORG/NAME DIR`` publishes the folder as it is. The
folder is written under a fresh temporary name beside it and renamed when complete; its files get
the usual permissions (those the umask leaves).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors.torch import save_file

from solo_ext.backbones import build_backbone
from solo_ext.backbones.interop import to_hf
from solo_ext.backbones.loading import (
    extract_backbone_state_dict,
    extract_decoder_state_dict,
    load_backbone_weights,
    load_strict,
    read_checkpoint,
)
from solo_ext.config.paths import resolve_weights_path
from solo_ext.data.info import DATASETS, dataset_mean_std
from solo_ext.results import read_run_json
from solo_ext.utils.errors import UserError, first_problem
from solo_ext.utils.runfolder import ARGS_FILE, RESULTS_FILE, read_json_object

Format = Literal["timm", "hf", "mae"]
FORMATS = get_args(Format)
# our backbone names -> timm's model of the same family (its architecture keys are overridden)
TIMM_FAMILY = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
}
# the model card's library_name per format (the hub's names; facebookresearch/mae has none)
LIBRARY = {"timm": "timm", "hf": "transformers", "mae": "pytorch"}
# our dataset names -> the hub's dataset ids where they differ; custom data has none
HUB_DATASETS = {"imagenet": "imagenet-1k", "custom": None}
CARD_METRICS = ("val_acc1", "val_acc5", "val_knn_acc1", "val_knn_acc5", "val_effective_rank")


class ExportError(UserError, ValueError):
    """A bad argument or source; printed as one line."""


def architecture(args: dict) -> dict[str, Any]:
    """The encoder's and decoder's sizes from a run's args.json, via the backbone itself."""
    backbone_cfg = args["backbone"]
    with torch.device("meta"):
        backbone = build_backbone(backbone_cfg["name"], backbone_cfg.get("kwargs") or {})
    mk = args.get("method_kwargs") or {}
    first: Any = backbone.blocks[0]  # a timm Block
    mlp_hidden = first.mlp.fc1.out_features
    return {
        "backbone": {"name": backbone_cfg["name"], "kwargs": backbone_cfg.get("kwargs") or {}},
        "img_size": backbone.img_size,
        "patch_size": backbone.patch_size,
        "embed_dim": backbone.embed_dim,
        "depth": backbone.depth,
        "num_heads": first.attn.num_heads,
        "mlp_ratio": mlp_hidden / backbone.embed_dim,
        "decoder_embed_dim": mk.get("decoder_embed_dim"),
        "decoder_depth": mk.get("decoder_depth"),
        "decoder_num_heads": mk.get("decoder_num_heads"),
        "mask_ratio": mk.get("mask_ratio", 0.75),
        "norm_pix_loss": mk.get("norm_pix_loss", False),
    }


def preprocessing(args: dict, arch: dict) -> dict[str, Any]:
    """How the run fed images to the encoder at evaluation: the input side, the normalisation
    statistics (``dataset_mean_std``, as training) and the centre crop of the val transform
    (``data.augmentations.prepare_transforms``: datasets of varying image size are resized to
    side/0.875 and centre-cropped; fixed-size ones are only resized), bicubic."""
    dataset = args["data"]["dataset"]
    mean, std = dataset_mean_std(dataset, (args.get("augmentations") or [{}])[0])
    return {
        "img_size": arch["img_size"],
        "mean": list(mean),
        "std": list(std),
        "crop_pct": 224 / 256 if DATASETS[dataset].image_size is None else 1.0,
        "interpolation": "bicubic",
    }


def timm_spec(arch: dict) -> tuple[str, dict]:
    """(timm model name, keyword arguments) that build our encoder in timm."""
    name = TIMM_FAMILY.get(arch["backbone"]["name"], "vit_base_patch16_224")
    kwargs = {
        "img_size": arch["img_size"],
        "patch_size": arch["patch_size"],
        "embed_dim": arch["embed_dim"],
        "depth": arch["depth"],
        "num_heads": arch["num_heads"],
        "mlp_ratio": arch["mlp_ratio"],
        "num_classes": 0,
    }
    return name, kwargs


def hf_config(arch: dict, decoder: dict, source: Path):
    """A ``transformers.ViTMAEConfig`` of the same model (LayerNorm eps 1e-6, as ours), with
    ``mask_ratio`` 0: ``AutoModel`` and the feature-extraction pipeline then see every patch (the
    run's ratio is in export.json and the model card).

    Raises:
        ExportError: the checkpoint ``source`` has no ``decoder`` weights, transformers is not
            installed (chained to the ImportError), or the run has no decoder settings.
    """
    missing = None
    try:
        from transformers import ViTMAEConfig
    except ImportError as err:
        missing = err
    # (what is wrong, message, the error it comes from), in the order a user should fix them
    problems = (
        (not decoder, f"{source}: no decoder weights (decoder.*) to export for --to hf", None),
        (missing, "--to hf needs transformers: pip install -c constraints.txt -e '.[interop]'", missing),
        (
            arch["decoder_embed_dim"] is None,
            "--to hf: the run has no MAE decoder settings (method_kwargs.decoder_*)",
            None,
        ),
    )
    problem = next(((message, cause) for wrong, message, cause in problems if wrong), None)
    if problem is not None:
        raise ExportError(problem[0]) from problem[1]
    return ViTMAEConfig(
        image_size=arch["img_size"],
        patch_size=arch["patch_size"],
        num_channels=3,
        hidden_size=arch["embed_dim"],
        num_hidden_layers=arch["depth"],
        num_attention_heads=arch["num_heads"],
        intermediate_size=round(arch["embed_dim"] * arch["mlp_ratio"]),
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        decoder_hidden_size=arch["decoder_embed_dim"],
        decoder_num_hidden_layers=arch["decoder_depth"],
        decoder_num_attention_heads=arch["decoder_num_heads"],
        decoder_intermediate_size=4 * arch["decoder_embed_dim"],
        # ViTMAE masks at random in every forward, also in AutoModel and pipelines; with 0 it
        # keeps every patch (in a shuffled order: cls and mean features do not depend on it)
        mask_ratio=0.0,
        norm_pix_loss=arch["norm_pix_loss"],
        # what the weights are (the hub reads it for the model's task)
        architectures=["ViTMAEForPreTraining"],
    )


def _contiguous(state: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def write_timm(folder: Path, encoder: dict, arch: dict, prep: dict, license_id: str) -> tuple[str, dict]:
    """timm's hub layout of the encoder through ``timm.models.save_for_hf``; returns the timm
    model name and keyword arguments that build it."""
    import timm
    from timm.models import save_for_hf

    name, kwargs = timm_spec(arch)
    model = timm.create_model(name, pretrained=False, **kwargs)
    load_strict(model, encoder, "the encoder")
    size = prep["img_size"]
    save_for_hf(
        model,
        str(folder),
        safe_serialization=True,
        # timm's weights tag and licence of the family are not ours
        model_config={"pretrained_cfg": {"tag": "solo_ext", "license": license_id}},
        data_config={
            "input_size": (3, size, size),
            "mean": prep["mean"],
            "std": prep["std"],
            "crop_pct": prep["crop_pct"],
            "crop_mode": "center",
            "interpolation": prep["interpolation"],
        },
    )
    return name, kwargs


def write_hf(folder: Path, encoder: dict, decoder: dict, config, prep: dict) -> None:
    """``ViTMAEForPreTraining``'s config and weights, and a ``ViTImageProcessor`` of the run's
    input size and statistics (it resizes to the square side, without a crop)."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    # transformers 4's key names: readable by transformers 4 and 5 (5 writes these names to disk
    # too, apart from its decoder layers, which it saves as decoder.decoder_encoder.layer)
    state = to_hf(encoder, decoder, "v4")
    config.save_pretrained(str(folder))
    save_file(_contiguous(state), str(folder / "model.safetensors"), metadata={"format": "pt"})
    size = prep["img_size"]
    ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC,
        image_mean=prep["mean"],
        image_std=prep["std"],
    ).save_pretrained(str(folder))


def _usual_permissions(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes a plain ``open``/``mkdir`` would have:
    mkdtemp makes 0700 and safetensors writes 0600, whatever the umask."""
    umask = os.umask(0)  # read it the only portable way: set and restore at once
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _compact(spec: dict) -> str:
    """``{"name": "warmup", "weight": 0.1}`` -> ``warmup(weight=0.1)``."""
    inner = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name" and v is not None)
    return f"{spec.get('name', '')}({inner})"


def model_card(to: Format, meta: dict, args: dict, results: dict | None, license_id: str) -> str:
    """The folder's ``README.md``: hub metadata (YAML front matter) and what was trained, on what,
    with which recipe, what it reached, and how to load it in each library."""
    from huggingface_hub import ModelCardData

    arch, prep = meta["architecture"], meta["preprocessing"]
    dataset = args["data"]["dataset"]
    regularizers = (args.get("method_kwargs") or {}).get("regularizers") or {}
    derived = (args.get("derived") or {}).get("regularizers") or {}
    hub_dataset = HUB_DATASETS.get(dataset, dataset)
    where = f" ({args['data'].get('train_path')})" if dataset == "custom" else ""
    data = ModelCardData(
        library_name=LIBRARY[to],
        license=license_id,
        datasets=[hub_dataset] if hub_dataset else None,
        pipeline_tag="image-feature-extraction",
        tags=[
            "solo-ext",
            "masked-autoencoder",
            "self-supervised-learning",
            "vision-transformer",
            "image-feature-extraction",
            *sorted(regularizers),
            *(["timm"] if to == "timm" else []),
        ],
    )
    name = args.get("name") or "model"
    kw = arch["backbone"]["kwargs"]
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        f"A masked autoencoder pretrained with solo-ext, method `{args.get('method')}`, exported with "
        f"`python -m solo_ext.export --to {to}`.",
        "",
        "| | |",
        "|---|---|",
        f"| backbone | `{arch['backbone']['name']}`{' ' + json.dumps(kw) if kw else ''}: "
        f"{arch['img_size']} px, patch {arch['patch_size']}, width {arch['embed_dim']}, "
        f"depth {arch['depth']}, {arch['num_heads']} heads |",
        f"| MAE | mask ratio {arch['mask_ratio']}, decoder {arch['decoder_embed_dim']} wide x "
        f"{arch['decoder_depth']} blocks, norm_pix_loss {arch['norm_pix_loss']} |",
    ]
    for reg, spec in sorted(regularizers.items()):
        weight = (derived.get(reg) or {}).get("effective_weight")
        schedule = _compact(spec.get("scheduler") or {})
        extra = ", ".join(
            f"{k}={v}" for k, v in spec.items() if k not in ("scheduler", "gather") and v is not None
        )
        lines.append(f"| regularizer {reg} | weight {weight}, schedule {schedule}; {extra} |")
    if not regularizers:
        lines.append("| regularizers | none (plain MAE) |")
    lines += [
        f"| dataset | `{dataset}`{where} |",
        f"| epochs | {meta['epoch'] + 1 if meta['epoch'] is not None else '?'} of "
        f"{args.get('max_epochs')} (checkpoint of epoch {meta['epoch']}, step {meta['global_step']}) |",
        f"| input | {prep['img_size']} px, bicubic, crop_pct {prep['crop_pct']:.4g}, "
        f"mean {prep['mean']}, std {prep['std']} |",
        f"| recipe | the run's `args.json`, SHA-256 `{meta['args_sha256']}` |",
        "",
        "## Results",
        "",
    ]
    metrics = (results or {}).get("metrics") or {}
    shown = [m for m in CARD_METRICS if m in metrics]
    if shown:
        lines += ["| metric | final | best (epoch) | protocol |", "|---|---|---|---|"]
        lines += [
            f"| {m} | {metrics[m]['final']:.4g} | {metrics[m]['best']:.4g} ({metrics[m]['best_epoch']:g}) "
            f"| {metrics[m].get('protocol', '')} |"
            for m in shown
        ]
    else:
        lines.append(f"No evaluation: the run folder has no {RESULTS_FILE} with validation metrics.")
    lines += ["", "## Use", "", "```python", *_usage(to, meta), "```", ""]
    lines += [
        "Back into solo-ext: `method_kwargs.init_from=DIR` (continue pretraining) or "
        "`pretrained_feature_extractor=DIR` (linear evaluation).",
        "",
        "Publish: `hf upload ORG/NAME DIR` (huggingface_hub's command line).",
        "",
    ]
    return "\n".join(lines)


def _usage(to: Format, meta: dict) -> list[str]:
    """How to load the export folder DIR in its library, with features of the whole image."""
    if to == "timm":
        return [
            "import timm",
            'model = timm.create_model("local-dir:DIR", pretrained=True).eval()  # or "hf-hub:ORG/NAME"',
            "config = timm.data.resolve_data_config({}, model=model)",
            "transform = timm.data.create_transform(**config)",
            "tokens = model.forward_features(transform(image)[None])  # (1, 1 + patches, width)",
            "cls = model.forward_head(tokens, pre_logits=True)",
        ]
    if to == "hf":
        ratio = meta["architecture"]["mask_ratio"]
        return [
            "from transformers import pipeline",
            'extract = pipeline("image-feature-extraction", model="DIR")  # or "ORG/NAME"',
            "tokens = extract(image, return_tensors=True)  # (1, 1 + patches, width)",
            "cls, mean = tokens[:, 0], tokens[:, 1:].mean(dim=1)",
            "# AutoModel and the pipeline load the encoder (ViTMAEModel) and list the decoder's",
            "# weights as unexpected: they are ViTMAEForPreTraining's, kept for pretraining.",
            "# the config's mask_ratio is 0 (whole image; patch tokens come shuffled by ViTMAE);",
            "# to continue pretraining with the run's masking:",
            "from transformers import ViTMAEForPreTraining",
            f'mae = ViTMAEForPreTraining.from_pretrained("DIR", mask_ratio={ratio})',
        ]
    return [
        "import torch",
        'state = torch.load("DIR/checkpoint.pth", weights_only=True)["model"]',
        "# facebookresearch/mae: python main_finetune.py --finetune DIR/checkpoint.pth ...",
    ]


def export(source: str | Path, to: Format, out: str | Path, license_id: str = "other") -> Path:
    """Write the export folder; returns it.

    Raises:
        ConfigError: ``source`` is no checkpoint file or run folder with one.
        ExportError: ``to`` is no format, ``out`` holds files, no args.json beside the checkpoint;
            for ``hf``, see :func:`hf_config`.
        CheckpointError: the checkpoint cannot be read or does not fit the run's backbone.
    """
    out = Path(out)
    ckpt_path = Path(resolve_weights_path("source", str(source)))
    args_path = ckpt_path.parent / ARGS_FILE
    problems = (
        (to not in FORMATS, f"--to={to!r}: must be one of {', '.join(FORMATS)}"),
        (
            out.exists() and any(out.iterdir()),
            f"--out={str(out)!r}: exists and is not empty; choose a new folder",
        ),
        (not args_path.is_file(), f"{ckpt_path}: no args.json beside it, so the architecture is unknown"),
    )
    problem = first_problem(problems)
    if problem is not None:
        raise ExportError(problem)
    args, problem = read_json_object(args_path)
    if args is None:
        raise ExportError(f"{args_path} {problem}, so the architecture is unknown")
    results_path = ckpt_path.parent / RESULTS_FILE
    # the model card quotes the run's results when they read; a bad results.json only leaves them out
    results = None
    if results_path.is_file():
        results = read_run_json(results_path, "the model card leaves the results out")
    ckpt = read_checkpoint(ckpt_path)
    encoder, fmt = extract_backbone_state_dict(ckpt)
    arch = architecture(args)
    # the encoder must fit the run's backbone exactly (strict; listed keys otherwise)
    backbone = build_backbone(arch["backbone"]["name"], arch["backbone"]["kwargs"])
    load_backbone_weights(backbone, {"state_dict": {f"backbone.{k}": v for k, v in encoder.items()}})
    encoder = _contiguous(backbone.state_dict())
    decoder = _contiguous(extract_decoder_state_dict(ckpt) or {})
    meta: dict[str, Any] = {
        "format": to,
        "architecture": arch,
        "preprocessing": preprocessing(args, arch),
        "source_checkpoint": str(ckpt_path.resolve()),
        "source_format": fmt,
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "args_sha256": hashlib.sha256(args_path.read_bytes()).hexdigest(),
    }
    config = hf_config(arch, decoder, ckpt_path) if to == "hf" else None
    out.parent.mkdir(parents=True, exist_ok=True)
    # a name of our own beside ``out`` (same file system, so the rename is atomic): nothing of
    # the user's, such as an ``out.tmp`` folder, is ever overwritten or deleted
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if to == "timm":
            name, kwargs = write_timm(tmp, encoder, arch, meta["preprocessing"], license_id)
            meta.update(timm_model=name, timm_kwargs=kwargs)
        elif to == "hf":
            write_hf(tmp, encoder, decoder, config, meta["preprocessing"])
        else:
            state = {**encoder, **decoder}
            torch.save({"model": state}, tmp / "checkpoint.pth")
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "export.json").write_text(json.dumps(meta, indent=2))
        (tmp / "README.md").write_text(model_card(to, meta, args, results, license_id))
        _usual_permissions(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m solo_ext.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run folder (its newest checkpoint) or a checkpoint file")
    parser.add_argument("--to", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="a new folder")
    parser.add_argument(
        "--license", default="other", help="the model card's licence id (the hub's list; default: other)"
    )
    args = parser.parse_args(argv)
    from solo_ext.run.exits import exit_on_user_error

    with exit_on_user_error():
        out = export(args.source, args.to, args.out, args.license)
    print(f"exported ({args.to}) to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
