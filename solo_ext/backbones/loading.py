"""Load a pretrained ViT backbone from the checkpoint formats people actually have.

These layouts are recognised, read with ``torch.load(weights_only=True)`` or from
``.safetensors`` (tensors only by design); a folder stands for its ``model.safetensors``:

- Lightning checkpoints of solo-ext and solo-learn: ``{"state_dict": {"backbone.<timm name>": ...,
  "decoder....", "classifier....", "momentum_backbone....", ...}}``; solo-learn's older releases
  used the prefix ``encoder.`` instead of ``backbone.``.
- facebookresearch/mae (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022):
  ``{"model": {<timm names>, "mask_token", "decoder_*", ...}}`` from pretraining, or with
  ``head.*`` / ``fc_norm.*`` from fine-tuning.
- A bare state dict in timm ``VisionTransformer`` names (a timm export), or facebookresearch/mae's
  tensors without the ``model`` key (a ``solo_ext.export --to mae`` safetensors).
- Hugging Face ``ViTMAEForPreTraining`` / ``ViTMAEModel`` (transformers 4 or 5 key names),
  converted by :mod:`solo_ext.backbones.interop`.

Loading is strict: a checkpoint that does not fit the backbone exactly stops with the missing,
unexpected and mismatched keys listed, never a silent partial load (solo-learn's
``strict=False`` hides exactly the errors users then ask about). The one adaptation made is the
positional embedding, interpolated when the checkpoint was trained at another image size.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from solo_ext.backbones.interop import from_hf, is_hf_vitmae
from solo_ext.backbones.pos_embed import interpolate_pos_embed
from solo_ext.utils.errors import UserError

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".safetensors")
# a folder stands for its weights file (a Hugging Face model folder, a solo_ext.export folder)
FOLDER_WEIGHTS = "model.safetensors"

# Lightning prefixes of the backbone, in the order they are tried; the format name says which
# family wrote the file (solo-ext checkpoints share solo-learn's layout by design).
_LIGHTNING_PREFIXES = (("backbone.", "solo-learn"), ("encoder.", "solo-learn-legacy"))

# facebookresearch/mae parameters that are not part of the encoder: the pretraining decoder
# (decoder_embed, decoder_pos_embed, decoder_blocks, decoder_norm, decoder_pred), the mask token,
# and the fine-tuning classifier.
_MAE_NON_BACKBONE_PREFIXES = ("decoder_", "mask_token", "head.", "fc_norm.")

# Keys whose presence marks a state dict in timm ViT names.
_TIMM_MARKERS = ("pos_embed", "patch_embed.proj.weight")

_LISTED_KEYS = 10


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be read, its layout is unknown, or it does not fit the backbone."""


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file on the CPU, refusing anything but tensors and plain containers.

    Args:
        path: a ``.ckpt``, ``.pth`` or ``.pt`` file written by ``torch.save``, a ``.safetensors``
            file, or a folder holding ``model.safetensors``.

    Returns:
        The loaded dictionary.

    Raises:
        CheckpointError: ``'<path>': <why>``: the file is missing, has another suffix, cannot be
            read, is not a dictionary, or holds pickled Python objects that ``weights_only=True``
            refuses to unpickle (chained to the reader's error, except for the refusal).
    """
    path = Path(path)
    if path.is_dir() and (path / FOLDER_WEIGHTS).is_file():
        path = path / FOLDER_WEIGHTS
    cause: Exception | None = None  # what the CheckpointError is chained to
    if path.suffix not in CHECKPOINT_SUFFIXES:
        reason = (
            f"unsupported checkpoint suffix {path.suffix!r}; expected one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    elif not path.is_file():
        reason = "no such checkpoint file"
    else:
        try:
            ckpt = (
                # tensors only, by construction of the format: nothing to unpickle
                load_file(str(path), device="cpu")
                if path.suffix == ".safetensors"
                else torch.load(path, map_location="cpu", weights_only=True)
            )
        except SafetensorError as err:
            reason, cause = f"not a readable safetensors file ({err})", err
        except pickle.UnpicklingError as err:
            refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            if refused is None:
                reason, cause = "not a readable torch checkpoint (corrupt or not torch.save)", err
            else:
                # the refusal says all there is to say: no chained unpickling trace
                reason = (
                    "refused to load: it contains pickled Python objects beyond tensors "
                    "(weights_only=True); re-save it with torch.save(state_dict) "
                    f"(first refused object: {refused.group(1)})"
                )
        except (EOFError, RuntimeError) as err:
            reason, cause = f"not a readable torch checkpoint ({type(err).__name__})", err
        else:
            if isinstance(ckpt, dict):
                return ckpt
            reason = f"expected a dictionary, the file holds a {type(ckpt).__name__}"
    raise CheckpointError(f"'{path}': {reason}") from cause


def _is_timm_state_dict(sd: Any) -> bool:
    return (
        isinstance(sd, dict)
        and all(isinstance(v, torch.Tensor) for v in sd.values())
        and all(k in sd for k in _TIMM_MARKERS)
    )


def _first_keys(keys: list[str]) -> str:
    """``keys`` as one line: the first few and how many there are."""
    shown = ", ".join(keys[:_LISTED_KEYS])
    more = f", ... ({len(keys)} in all)" if len(keys) > _LISTED_KEYS else ""
    return f"{shown}{more}"


def extract_backbone_state_dict(ckpt: dict) -> tuple[dict[str, torch.Tensor], str]:
    """Find the ViT backbone's weights in a checkpoint and return them in timm names.

    Args:
        ckpt: a dictionary from :func:`read_checkpoint`.

    Returns:
        ``(state_dict, format)``: the backbone's tensors keyed by timm ``VisionTransformer`` names
        (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.*``, ``norm.*``), and
        the format found: ``"solo-learn"`` (solo-learn and solo-ext Lightning checkpoints,
        ``backbone.`` prefix), ``"solo-learn-legacy"`` (``encoder.`` prefix), ``"mae"``
        (facebookresearch/mae, ``model`` key, or its tensors bare), ``"hf"`` (Hugging Face
        ``ViTMAEForPreTraining``/``ViTMAEModel``) or ``"timm"`` (a bare state dict).

    Raises:
        CheckpointError: the layout is none of these (the message lists the top-level keys), or a
            facebookresearch/mae fine-tuned checkpoint replaced the encoder's final norm by
            ``fc_norm``.
    """
    state_dict = ckpt.get("state_dict")
    if isinstance(state_dict, dict):
        for prefix, fmt in _LIGHTNING_PREFIXES:
            backbone = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if backbone:
                return backbone, fmt

    model: Any = ckpt.get("model")  # a timm state dict when mae
    mae = _is_timm_state_dict(model)
    # Fine-tuning with global_pool deletes the encoder's norm and normalises the pooled token with
    # fc_norm instead; LayerNorm does not commute with the pooling, so fc_norm cannot stand in
    # for norm: refused below.
    global_pool = mae and "norm.weight" not in model and "fc_norm.weight" in model
    if mae and not global_pool:
        backbone = {k: v for k, v in model.items() if not k.startswith(_MAE_NON_BACKBONE_PREFIXES)}
        return backbone, "mae"

    if is_hf_vitmae(ckpt):
        return from_hf(ckpt)[0], "hf"

    if _is_timm_state_dict(ckpt):
        # a bare timm encoder, or facebookresearch/mae's tensors without the "model" key (our
        # mae export's safetensors): the decoder is not part of the backbone
        backbone = {k: v for k, v in ckpt.items() if not k.startswith(_MAE_NON_BACKBONE_PREFIXES)}
        return backbone, "timm" if len(backbone) == len(ckpt) else "mae"

    found = _first_keys(sorted(map(str, ckpt)))
    if isinstance(state_dict, dict):
        found += f"; state_dict keys: {_first_keys(sorted(map(str, state_dict)))}"
    reason = (
        "facebookresearch/mae checkpoint fine-tuned with global_pool: it has fc_norm instead of "
        "the encoder's final norm, so it is not a plain ViT encoder; use the pretraining "
        "checkpoint (or one fine-tuned with --cls_token)"
        if global_pool
        else "unknown checkpoint layout: expected a Lightning 'state_dict' with 'backbone.' (or "
        "'encoder.') keys, a facebookresearch/mae 'model' dict, or a bare timm ViT state dict; "
        f"top-level keys found: {found}"
    )
    raise CheckpointError(reason)


def extract_decoder_state_dict(ckpt: dict) -> dict[str, torch.Tensor] | None:
    """The MAE decoder's weights in our (facebookresearch/mae) names, or None if the checkpoint
    has none: Lightning ``decoder.*``, facebookresearch/mae's ``decoder_*`` and ``mask_token``
    (with or without the ``model`` key), or a Hugging Face ``ViTMAEForPreTraining``."""
    state_dict = ckpt.get("state_dict")
    if isinstance(state_dict, dict):
        decoder = {k[len("decoder.") :]: v for k, v in state_dict.items() if k.startswith("decoder.")}
        return decoder or None
    if is_hf_vitmae(ckpt):
        return from_hf(ckpt)[1] or None
    model = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    decoder = {k: v for k, v in model.items() if k.startswith(("decoder_", "mask_token"))}
    return decoder or None


def _square_grid(num_patches: int) -> int | None:
    grid = math.isqrt(num_patches)
    return grid if grid * grid == num_patches else None


def _fit_pos_embed(state_dict: dict[str, torch.Tensor], backbone: nn.Module) -> bool:
    """Interpolate ``state_dict["pos_embed"]`` (1, 1+L_old, D) to the backbone's patch grid in place.

    Only square grids with one class token and the same width D are interpolated; anything else
    is left for the strict load to report as a shape mismatch.

    Returns:
        Whether the positional embedding was interpolated.
    """
    saved = state_dict.get("pos_embed")
    target = getattr(backbone, "pos_embed", None)
    if saved is None or target is None or saved.shape == target.shape:
        return False
    if saved.ndim != 3 or target.ndim != 3 or saved.shape[-1] != target.shape[-1]:
        return False
    old_grid, new_grid = _square_grid(saved.shape[1] - 1), _square_grid(target.shape[1] - 1)
    if old_grid is None or new_grid is None:
        return False
    state_dict["pos_embed"] = interpolate_pos_embed(saved, new_grid)
    return True


def load_backbone_weights(backbone: nn.Module, path_or_ckpt: str | Path | dict) -> dict[str, Any]:
    """Load pretrained weights into a ViT backbone, strictly.

    Args:
        backbone: a ViT with timm parameter names (``MaskedViT`` or timm ``VisionTransformer``
            without a head).
        path_or_ckpt: a checkpoint file, or a dictionary already read with :func:`read_checkpoint`.

    Returns:
        A report: ``format`` (see :func:`extract_backbone_state_dict`), ``num_tensors`` (tensors
        loaded), ``pos_embed_interpolated`` (the checkpoint's patch grid differed from the
        backbone's and its positional embedding was resized).

    Raises:
        CheckpointError: unreadable file, unknown layout, or any key missing, unexpected or of
            another shape; the message lists the first keys of each kind with their counts.
    """
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else read_checkpoint(path_or_ckpt)
    state_dict, fmt = extract_backbone_state_dict(ckpt)
    interpolated = _fit_pos_embed(state_dict, backbone)

    source = f"'{path_or_ckpt}'" if not isinstance(path_or_ckpt, dict) else "checkpoint"
    load_strict(backbone, state_dict, f"{source} ({fmt} format)")
    return {"format": fmt, "num_tensors": len(state_dict), "pos_embed_interpolated": interpolated}


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, with every missing, unexpected and
    mis-shaped key listed in a CheckpointError instead of PyTorch's message."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {type(module).__name__}:"]
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch (checkpoint vs model)", mismatched),
        ):
            if keys:
                lines.append(f"  {len(keys)} {what}: {_first_keys(keys)}")
        lines.append(
            "  build the model with the name and kwargs (depth, embed_dim, patch_size) it was trained with"
        )
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state_dict, strict=True)
