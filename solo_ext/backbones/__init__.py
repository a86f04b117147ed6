"""Masked ViT backbones built from timm parts, MAE's decoder, and fixed positional embeddings."""

from solo_ext.backbones.decoder import MAEDecoder
from solo_ext.backbones.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed
from solo_ext.backbones.vit import BACKBONES, MaskedViT, MaskedViTOutput, build_backbone

__all__ = [
    "BACKBONES",
    "MAEDecoder",
    "MaskedViT",
    "MaskedViTOutput",
    "build_backbone",
    "get_2d_sincos_pos_embed",
    "interpolate_pos_embed",
]
