"""Paths a config names: a weights source as a file, and what a checkpoint's folder says about
the run that wrote it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from solo_ext.backbones.interop import backbone_from_hf_config
from solo_ext.backbones.loading import CHECKPOINT_SUFFIXES, FOLDER_WEIGHTS
from solo_ext.config.errors import fail
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in

# an args.json: JSON whose top level is a mapping
_JSON_MAPPING = TypeAdapter(dict[str, Any])


def resolve_weights_path(key: str, value: Any) -> str:
    """A weights source as a file path: a run folder's newest checkpoint, a folder's
    model.safetensors, or a checkpoint file. ConfigError (one line, naming ``key``) otherwise."""
    path = Path(value).expanduser().resolve()
    if path.is_dir():
        found = checkpoints_in(path)
        if found:
            return str(found[-1])
        if (path / FOLDER_WEIGHTS).is_file():
            return str(path / FOLDER_WEIGHTS)
        allowed = f"a folder without checkpoints (<name>-<run id>-ep=<E>.ckpt) or {FOLDER_WEIGHTS}"
    elif not path.exists():
        allowed = "no such checkpoint file or folder"
    elif path.suffix not in CHECKPOINT_SUFFIXES:
        allowed = f"must end with one of {', '.join(CHECKPOINT_SUFFIXES)}"
    else:
        return str(path)
    raise fail(key, value, allowed)


def saved_run_args(checkpoint: str | os.PathLike, key: str = "pretrained_feature_extractor") -> dict | None:
    """The ``args.json`` beside ``checkpoint`` (solo-ext and solo-learn runs), an export's or a
    Hugging Face folder's description of its model, or None.

    Raises:
        ConfigError: args.json exists but is not a JSON mapping (the message names ``key``).
    """
    folder = Path(checkpoint).parent
    path = folder / "args.json"
    if not path.is_file():
        return exported_run_args(folder)
    try:
        return _JSON_MAPPING.validate_json(path.read_bytes())
    except (OSError, ValidationError) as err:
        reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else err.strerror
        raise fail(key, str(checkpoint), f"cannot read {path} as a JSON mapping ({reason})") from err


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
