"""Weights in and out of solo-ext: timm, facebookresearch/mae and Hugging Face ``ViTMAE`` names.

Ours are timm's ``VisionTransformer`` names for the encoder (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``norm``) and facebookresearch/mae's for the decoder (``mask_token``, ``decoder_pos_embed``,
``decoder_embed``, ``decoder_blocks.<i>.*`` as the encoder's blocks, ``decoder_norm``,
``decoder_pred``). So timm's layout is ours for the encoder, and facebookresearch/mae's is ours
for both; Hugging Face's ``ViTMAEForPreTraining`` splits each fused ``qkv`` projection into
query, key and value and renames the rest. Two generations of its names are read and written:
transformers 5 (``vit.layers.<i>.attention.q_proj``) and transformers 4
(``vit.encoder.layer.<i>.attention.attention.query``).

Pure functions of state dicts and configs: no I/O, nothing imported from transformers.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

# Inside one block: our name -> Hugging Face's, per generation; qkv is handled apart.
_HF_BLOCK = {
    "v5": {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    },
    "v4": {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    },
}
_HF_QKV = {
    "v5": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
    "v4": ("attention.attention.query", "attention.attention.key", "attention.attention.value"),
}
_HF_ENCODER_LAYERS = {"v5": "vit.layers", "v4": "vit.encoder.layer"}
_HF_TOP = {
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "vit.layernorm.weight",
    "norm.bias": "vit.layernorm.bias",
}
_HF_DECODER_TOP = {
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_pos_embed",
    "decoder_embed.weight": "decoder.decoder_embed.weight",
    "decoder_embed.bias": "decoder.decoder_embed.bias",
    "decoder_norm.weight": "decoder.decoder_norm.weight",
    "decoder_norm.bias": "decoder.decoder_norm.bias",
    "decoder_pred.weight": "decoder.decoder_pred.weight",
    "decoder_pred.bias": "decoder.decoder_pred.bias",
}
_BLOCK_KEY = re.compile(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$")


def hf_generation(keys) -> str | None:
    """``"v5"`` or ``"v4"`` for a Hugging Face ViTMAE state dict's keys, None if neither."""
    keys = set(keys)
    if any(k.startswith("vit.layers.") for k in keys):
        return "v5"
    if any(k.startswith("vit.encoder.layer.") for k in keys):
        return "v4"
    return None


def is_hf_vitmae(keys) -> bool:
    return "vit.embeddings.cls_token" in set(keys) and hf_generation(keys) is not None


def to_hf(encoder: dict[str, Tensor], decoder: dict[str, Tensor], generation: str = "v5") -> dict:
    """Our encoder and decoder state dicts as one ``ViTMAEForPreTraining`` state dict."""
    out = {}
    for source, top in ((encoder, _HF_TOP), (decoder, _HF_DECODER_TOP)):
        for key, value in source.items():
            if key in top:
                out[top[key]] = value
                continue
            match = _BLOCK_KEY.match(key)
            if match is None:
                raise KeyError(f"{key}: no Hugging Face ViTMAE counterpart")
            group, index, inner, kind = match.groups()
            prefix = (
                f"{_HF_ENCODER_LAYERS[generation]}.{index}"
                if group == "blocks"
                else f"decoder.decoder_layers.{index}"
            )
            if inner == "attn.qkv":
                for name, part in zip(_HF_QKV[generation], value.chunk(3, dim=0)):
                    out[f"{prefix}.{name}.{kind}"] = part.clone()
            else:
                out[f"{prefix}.{_HF_BLOCK[generation][inner]}.{kind}"] = value
    return out


def from_hf(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A ``ViTMAEForPreTraining`` (or ``ViTMAEModel``, encoder only) state dict as our
    ``(encoder, decoder)`` state dicts; the decoder is empty when the checkpoint has none.

    Raises:
        KeyError: not a ViTMAE state dict, or the first key that has no counterpart in ours
            (named), or a block whose query, key and value are not all present.
    """
    generation = hf_generation(state)
    not_hf = ["not a Hugging Face ViTMAE state dict (no vit.layers / vit.encoder.layer keys)"]
    encoder, decoder, problems = _from_hf(state, generation) if generation else ({}, {}, not_hf)
    if problems:
        raise KeyError(problems[0])
    return encoder, decoder


def _from_hf(state: dict[str, Tensor], generation: str) -> tuple[dict, dict, list[str]]:
    """:func:`from_hf`'s conversion: (encoder, decoder, what it could not convert, in key order)."""
    # ViTMAEModel saves its keys without the "vit." prefix of ViTMAEForPreTraining
    if "embeddings.cls_token" in state:
        state = {f"vit.{k}": v for k, v in state.items()}
    reverse_top = {hf: ours for ours, hf in {**_HF_TOP, **_HF_DECODER_TOP}.items()}
    reverse_block = {hf: ours for ours, hf in _HF_BLOCK[generation].items()}
    # transformers 5 saves the decoder's layers as "decoder.decoder_encoder.layer" (its reverse
    # key mapping); transformers 4 wrote "decoder.decoder_layers"
    layer_key = re.compile(
        rf"^({re.escape(_HF_ENCODER_LAYERS[generation])}|decoder\.decoder_layers|decoder\.decoder_encoder\.layer)"
        r"\.(\d+)\.(.+)\.(weight|bias)$"
    )
    encoder: dict[str, torch.Tensor] = {}
    decoder: dict[str, torch.Tensor] = {}
    qkv: dict[tuple, list] = {}  # (target, prefix, block, kind) -> [target, q, k, v]
    problems: list[str] = []
    for key, value in state.items():
        if key in reverse_top:
            ours = reverse_top[key]
            (decoder if key.startswith("decoder.") else encoder)[ours] = value
            continue
        match = layer_key.match(key)
        group, index, inner, kind = match.groups() if match else (None, None, None, None)
        if inner not in reverse_block and inner not in _HF_QKV[generation]:
            problems.append(f"{key}: no counterpart in solo-ext's ViT/MAE decoder")
            continue
        assert group is not None  # a key that matched: inner was found above
        target, prefix = (decoder, "decoder_blocks") if group.startswith("decoder") else (encoder, "blocks")
        if inner in _HF_QKV[generation]:
            qkv.setdefault((id(target), prefix, index, kind), [target, None, None, None])[
                1 + _HF_QKV[generation].index(inner)
            ] = value
            continue
        target[f"{prefix}.{index}.{reverse_block[inner]}.{kind}"] = value
    for (_, prefix, index, kind), (target, q, k, v) in qkv.items():
        if q is None or k is None or v is None:
            problems.append(f"{prefix}.{index}: query, key and value {kind} are not all present")
        else:
            target[f"{prefix}.{index}.attn.qkv.{kind}"] = torch.cat([q, k, v], dim=0)
    return encoder, decoder, problems


def backbone_from_hf_config(config: dict) -> dict:
    """Our ``backbone`` config (name + kwargs) for a Hugging Face ViTMAE ``config.json``."""
    hidden = config["hidden_size"]
    return {
        "name": "vit_base",  # every size key below overrides the base's
        "kwargs": {
            "img_size": config["image_size"],
            "patch_size": config["patch_size"],
            "embed_dim": hidden,
            "depth": config["num_hidden_layers"],
            "num_heads": config["num_attention_heads"],
            "mlp_ratio": config["intermediate_size"] / hidden,
        },
    }


def backbone_from_timm_config(config: dict) -> dict | None:
    """Our ``backbone`` config (name + kwargs) for a timm hub folder's ``config.json``
    (``architecture`` and, where saved, ``model_args``): the sizes of the model timm builds from
    it (on the meta device, nothing allocated), or None when timm does not know the architecture,
    it is no ``VisionTransformer``, or its input is not square."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    try:
        with torch.device("meta"):
            model = timm.create_model(
                config["architecture"], pretrained=False, **(config.get("model_args") or {})
            )
    except (RuntimeError, TypeError, ValueError):
        return None
    if not isinstance(model, VisionTransformer) or not len(model.blocks):
        return None
    (height, width), (patch, patch_w) = model.patch_embed.img_size, model.patch_embed.patch_size
    if height != width or patch != patch_w:
        return None
    first: Any = model.blocks[0]  # a timm Block
    return {
        "name": "vit_base",  # every size key below overrides the base's
        "kwargs": {
            "img_size": height,
            "patch_size": patch,
            "embed_dim": model.embed_dim,
            "depth": len(model.blocks),
            "num_heads": first.attn.num_heads,
            "mlp_ratio": first.mlp.fc1.out_features / model.embed_dim,
        },
    }
