"""Paths a config names: a weights source as a file (a local path, or ``hf-hub:ORG/NAME`` through
huggingface_hub's cache), and what a checkpoint's folder says about the run that wrote it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from solo_ext.backbones.interop import backbone_from_hf_config, backbone_from_timm_config
from solo_ext.backbones.loading import CHECKPOINT_SUFFIXES, FOLDER_WEIGHTS
from solo_ext.config.errors import fail
from solo_ext.utils.runfolder import ARGS_FILE, read_json_object
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in

HUB_PREFIX = "hf-hub:"
# what a hub repository gives a weights source: its weights and the JSON files describing them
# (config.json of a ViTMAE or timm repository, export.json of a solo_ext.export folder)
HUB_FILES = ["*.json", FOLDER_WEIGHTS]
# huggingface_hub's reading of a true environment variable (constants.ENV_VARS_TRUE_VALUES)
_TRUE = {"1", "ON", "YES", "TRUE"}
_LOCAL = "give a local folder or checkpoint instead"


def resolve_weights_path(key: str, value: Any) -> str:
    """A weights source as a file path: a run folder's newest checkpoint, a folder's
    model.safetensors, a checkpoint file, or ``hf-hub:ORG/NAME``'s model.safetensors in
    huggingface_hub's cache (see :func:`hub_folder`). ConfigError (one line, naming ``key``)
    otherwise."""
    if isinstance(value, str) and value.startswith(HUB_PREFIX):
        folder = hub_folder(key, value)
        if not (folder / FOLDER_WEIGHTS).is_file():
            raise fail(
                key, value, f"the repository has no {FOLDER_WEIGHTS} (a ViTMAE or timm repository has)"
            )
        return str(folder / FOLDER_WEIGHTS)
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


def hub_cache() -> str:
    """huggingface_hub's cache folder as the environment names it now, in huggingface_hub's order:
    ``HF_HUB_CACHE``, the older ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub, else huggingface_hub's
    default (huggingface_hub reads the variables once, when it is imported)."""
    from huggingface_hub import constants

    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return os.path.expanduser(os.path.expandvars(env[name]))
    if env.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.path.expandvars(env["HF_HOME"])), "hub")
    return constants.HF_HUB_CACHE


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was when
    huggingface_hub was imported."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return now.upper() in _TRUE or constants.HF_HUB_OFFLINE


def hub_folder(key: str, value: str) -> Path:
    """The local folder of ``hf-hub:ORG/NAME``: ``huggingface_hub.snapshot_download`` of its
    JSON files and model.safetensors, from the cache alone when offline (``HF_HUB_OFFLINE``),
    else downloaded into the cache where missing or out of date.

    Raises:
        ConfigError: one line naming ``key`` and ``value``: not a repository id, not in the cache
            while offline, no such (or no accessible) repository, the hub unreachable.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo_id = value[len(HUB_PREFIX) :]
    cache, offline = hub_cache(), hub_offline()
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=HUB_FILES, cache_dir=cache, local_files_only=offline
        )
    except HFValidationError:
        allowed = "must be hf-hub:ORG/NAME, a Hugging Face model repository id"
    except GatedRepoError:
        allowed = f"the repository is gated; accept its terms on the hub, log in (hf auth login), or {_LOCAL}"
    except RepositoryNotFoundError:
        allowed = (
            f"no such model repository on the Hugging Face hub (or a private one: hf auth login); {_LOCAL}"
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        allowed = (
            f"not (wholly) in the Hugging Face cache {cache} and {why}; download it with network access "
            f"(hf download {repo_id}) or {_LOCAL}"
        )
    except OSError as err:
        allowed = f"cannot be fetched from the Hugging Face hub ({type(err).__name__}); {_LOCAL}"
    else:
        return Path(folder)
    raise fail(key, value, allowed)


def saved_run_args(checkpoint: str | os.PathLike, key: str = "pretrained_feature_extractor") -> dict | None:
    """The ``args.json`` beside ``checkpoint`` (solo-ext and solo-learn runs), an export's or a
    Hugging Face folder's description of its model, or None.

    Raises:
        ConfigError: args.json exists but is not a JSON mapping (the message names ``key``).
    """
    folder = Path(checkpoint).parent
    path = folder / ARGS_FILE
    if not path.is_file():
        return exported_run_args(folder)
    args, problem = read_json_object(path)
    if problem is not None:
        raise fail(key, str(checkpoint), f"cannot read {path}: it {problem}")
    return args


def exported_run_args(folder: Path) -> dict | None:
    """What a folder without args.json says about its model: a solo_ext.export folder's
    export.json, or the backbone alone from a Hugging Face ViTMAE folder's or a timm folder's
    config.json (``model_type: vit_mae``; ``architecture``)."""
    export_json, hf_json = folder / "export.json", folder / "config.json"
    if export_json.is_file():
        arch = json.loads(export_json.read_text()).get("architecture") or {}
        return {"backbone": arch.get("backbone"), "method": "mae"} if arch.get("backbone") else None
    if hf_json.is_file():
        config = json.loads(hf_json.read_text())
        if config.get("model_type") == "vit_mae":
            return {"backbone": backbone_from_hf_config(config), "method": "mae"}
        if isinstance(config.get("architecture"), str):
            backbone = backbone_from_timm_config(config)
            return {"backbone": backbone} if backbone else None
    return None
