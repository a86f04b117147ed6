"""Export a pretrained encoder (and decoder) for other code: timm, Hugging Face or facebookresearch/mae.

    python -m solo_ext.export RUN_DIR_OR_CKPT --to timm|hf|mae --out DIR

- ``timm``: ``model.safetensors`` with the encoder in timm ``VisionTransformer`` names; load it with
  ``timm.create_model(<timm_model>, **<timm_kwargs>, pretrained=True,
  pretrained_cfg_overlay=dict(file=".../model.safetensors"))`` (both written to ``export.json``).
- ``hf``: ``config.json`` + ``model.safetensors`` of ``transformers.ViTMAEForPreTraining``
  (encoder and decoder): ``ViTMAEForPreTraining.from_pretrained(DIR)``. Needs ``transformers``
  (``pip install -e ".[interop]"``).
- ``mae``: facebookresearch/mae's ``{"model": ...}`` as ``checkpoint.pth`` (its fine-tuning code
  reads ``--finetune checkpoint.pth``) and the same tensors as ``model.safetensors``.

Every export writes ``export.json``: what it is (format, architecture, image and patch size), the
source checkpoint and its epoch, and the SHA-256 of the run's ``args.json``. The folder is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
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
    read_checkpoint,
)
from solo_ext.config.paths import resolve_weights_path
from solo_ext.utils.errors import UserError, first_problem

Format = Literal["timm", "hf", "mae"]
FORMATS = get_args(Format)
# our backbone names -> timm's model of the same family (its architecture keys are overridden)
TIMM_FAMILY = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
}


class ExportError(UserError, ValueError):
    """A bad argument or source; printed as one line."""


def architecture(args: dict) -> dict[str, Any]:
    """The encoder's and decoder's sizes from a run's args.json, via the backbone itself."""
    backbone_cfg = args["backbone"]
    with torch.device("meta"):
        backbone = build_backbone(backbone_cfg["name"], backbone_cfg.get("kwargs") or {})
    mk = args.get("method_kwargs") or {}
    mlp_hidden = backbone.blocks[0].mlp.fc1.out_features
    return {
        "backbone": {"name": backbone_cfg["name"], "kwargs": backbone_cfg.get("kwargs") or {}},
        "img_size": backbone.img_size,
        "patch_size": backbone.patch_size,
        "embed_dim": backbone.embed_dim,
        "depth": backbone.depth,
        "num_heads": backbone.blocks[0].attn.num_heads,
        "mlp_ratio": mlp_hidden / backbone.embed_dim,
        "decoder_embed_dim": mk.get("decoder_embed_dim"),
        "decoder_depth": mk.get("decoder_depth"),
        "decoder_num_heads": mk.get("decoder_num_heads"),
        "mask_ratio": mk.get("mask_ratio", 0.75),
        "norm_pix_loss": mk.get("norm_pix_loss", False),
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
    """A ``transformers.ViTMAEConfig`` of the same model (LayerNorm eps 1e-6, as ours).

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
        mask_ratio=arch["mask_ratio"],
        norm_pix_loss=arch["norm_pix_loss"],
    )


def _contiguous(state: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def export(source: str | Path, to: Format, out: str | Path) -> Path:
    """Write the export folder; returns it.

    Raises:
        ConfigError: ``source`` is no checkpoint file or run folder with one.
        ExportError: ``to`` is no format, ``out`` holds files, no args.json beside the checkpoint;
            for ``hf``, see :func:`hf_config`.
        CheckpointError: the checkpoint cannot be read or does not fit the run's backbone.
    """
    out = Path(out)
    ckpt_path = Path(resolve_weights_path("source", str(source)))
    args_path = ckpt_path.parent / "args.json"
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
    args = json.loads(args_path.read_text())
    ckpt = read_checkpoint(ckpt_path)
    encoder, fmt = extract_backbone_state_dict(ckpt)
    arch = architecture(args)
    # the encoder must fit the run's backbone exactly (strict; listed keys otherwise)
    backbone = build_backbone(arch["backbone"]["name"], arch["backbone"]["kwargs"])
    load_backbone_weights(backbone, {"state_dict": {f"backbone.{k}": v for k, v in encoder.items()}})
    encoder = _contiguous(backbone.state_dict())
    decoder = _contiguous(extract_decoder_state_dict(ckpt) or {})
    meta = {
        "format": to,
        "architecture": arch,
        "source_checkpoint": str(ckpt_path.resolve()),
        "source_format": fmt,
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "args_sha256": hashlib.sha256(args_path.read_bytes()).hexdigest(),
    }
    config = hf_config(arch, decoder, ckpt_path) if to == "hf" else None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if to == "timm":
        name, kwargs = timm_spec(arch)
        meta.update(timm_model=name, timm_kwargs=kwargs)
        save_file(encoder, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    elif to == "hf":
        # transformers 4's key names: readable by transformers 4 and 5 (5 writes these names to disk
        # too, apart from its decoder layers, which it saves as decoder.decoder_encoder.layer)
        state = to_hf(encoder, decoder, "v4")
        config.save_pretrained(str(tmp))
        save_file(_contiguous(state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    else:
        state = {**encoder, **decoder}
        torch.save({"model": state}, tmp / "checkpoint.pth")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "export.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m solo_ext.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run folder (its newest checkpoint) or a checkpoint file")
    parser.add_argument("--to", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="a new folder")
    args = parser.parse_args(argv)
    from solo_ext.run.exits import exit_on_user_error

    with exit_on_user_error():
        out = export(args.source, args.to, args.out)
    print(f"exported ({args.to}) to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
