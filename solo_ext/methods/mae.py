"""MAE (He et al., 2022): encoder on the visible patches, light decoder, MSE on masked patches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from solo_ext.args.checks import check_bool, check_choice, check_keys, check_number
from solo_ext.backbones.decoder import MAEDecoder
from solo_ext.losses.mae import mae_loss_func
from solo_ext.methods.base import BaseMethod
from solo_ext.utils.checkpoint_loading import (
    extract_decoder_state_dict,
    load_backbone_weights,
    load_strict,
    read_checkpoint,
    resolve_weights_path,
)
from solo_ext.utils.errors import ConfigError
from solo_ext.utils.index_noise import index_noise

MAE_DEFAULTS = {
    "decoder_embed_dim": 512,
    "decoder_depth": 8,
    "decoder_num_heads": 16,
    "mask_ratio": 0.75,
    "norm_pix_loss": False,
    "online_features": "cls",
    # Masks drawn from (seed, epoch, crop, sample index) instead of the RNG: the same sample gets
    # the same mask whatever the number of processes (used to prove DDP equivalence).
    "index_masks": False,
    # Train the online probe on features of the full, unmasked crop (one extra no-grad encoder
    # pass) instead of the masked pass's: the probe then sees in training what it is evaluated on.
    "online_clean_features": False,
    "online_batchnorm": False,
    # continue pretraining from these weights: a run folder or checkpoint of ours or solo-learn's,
    # facebookresearch/mae's checkpoint, a timm/safetensors file, or a Hugging Face ViTMAE folder
    # (or a solo_ext.export folder); the encoder and, where present, the decoder, loaded strictly
    "init_from": None,
}


class MAE(BaseMethod):
    kwargs_defaults = MAE_DEFAULTS
    # Keys other recipes carry that this method reads elsewhere or not at all.
    kwargs_ignored: frozenset[str] = frozenset()

    @classmethod
    def parse_method_kwargs(cls, method_kwargs: dict, backbone: nn.Module) -> dict:
        mk = {**cls.kwargs_defaults, **method_kwargs}
        check_keys("method_kwargs", mk, set(cls.kwargs_defaults) | cls.kwargs_ignored)
        for key in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads"):
            check_number(f"method_kwargs.{key}", mk[key], low=1, integer=True)
        if mk["decoder_embed_dim"] % mk["decoder_num_heads"]:
            raise ConfigError(
                f"method_kwargs.decoder_num_heads={mk['decoder_num_heads']!r}: must divide "
                f"decoder_embed_dim={mk['decoder_embed_dim']}"
            )
        check_number("method_kwargs.mask_ratio", mk["mask_ratio"], low=0, high=1, high_open=True)
        if int(backbone.num_patches * (1 - mk["mask_ratio"])) < 1:
            raise ConfigError(
                f"method_kwargs.mask_ratio={mk['mask_ratio']!r}: keeps no patch of {backbone.num_patches}; "
                "must leave at least one visible"
            )
        check_bool("method_kwargs.norm_pix_loss", mk["norm_pix_loss"])
        check_bool("method_kwargs.index_masks", mk["index_masks"])
        check_bool("method_kwargs.online_clean_features", mk["online_clean_features"])
        check_bool("method_kwargs.online_batchnorm", mk["online_batchnorm"])
        check_choice("method_kwargs.online_features", mk["online_features"], ("cls", "mean"))
        if mk["init_from"] is not None:
            mk["init_from"] = resolve_weights_path("method_kwargs.init_from", mk["init_from"])
        return mk

    def __init__(self, cfg):
        super().__init__(cfg)
        mk = cfg.method_kwargs
        self.mask_ratio = mk.mask_ratio
        self.norm_pix_loss = mk.norm_pix_loss
        self.index_masks = mk.index_masks
        self.online_clean_features = mk.online_clean_features
        self.patch_size = self.backbone.patch_size
        self.decoder = MAEDecoder(
            in_dim=self.features_dim,
            embed_dim=mk.decoder_embed_dim,
            depth=mk.decoder_depth,
            num_heads=mk.decoder_num_heads,
            num_patches=self.backbone.num_patches,
            patch_size=self.patch_size,
        )
        if mk.get("init_from"):
            self.init_weights_from(mk.init_from)

    def init_weights_from(self, path: str) -> None:
        """Load the encoder and, when the checkpoint has one, the decoder (both strictly)."""
        ckpt = read_checkpoint(path)
        report = load_backbone_weights(self.backbone, ckpt)
        decoder = extract_decoder_state_dict(ckpt)
        if decoder is not None:
            load_strict(self.decoder, decoder, f"'{path}' ({report['format']} format) decoder")
        print(
            f"init_from: encoder ({report['num_tensors']} tensors, {report['format']} format) "
            f"{'and decoder ' if decoder is not None else '(no decoder in it: the decoder starts fresh) '}"
            f"from {path}"
        )

    def compile_modules(self) -> None:
        super().compile_modules()
        self.decoder.compile()  # in place: its parameters keep their names

    def training_forward(
        self, x: torch.Tensor, indexes: torch.Tensor | None = None, crop: int = 0, block_indices=()
    ) -> dict[str, Any]:
        """One masked pass. ``mask`` (N, L): 1 = removed. ``blocks``: the requested blocks' outputs."""
        noise = None
        if self.index_masks and indexes is not None:
            noise = index_noise(indexes, self.backbone.num_patches, self.cfg.seed, self.current_epoch, crop)
        out = self.backbone.forward_features(
            x, mask_ratio=self.mask_ratio, block_indices=block_indices, noise=noise
        )
        pred = self.decoder(out.tokens, out.ids_restore)
        if self.online_clean_features:
            with torch.no_grad():
                feats = self(x)
        else:
            feats = self.backbone.pool(out.tokens, self.online_features)
        return {
            "feats": feats,
            "tokens": out.tokens,
            "blocks": out.blocks,
            "pred": pred,
            "mask": out.mask,
        }

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred (N, L, p*p*3), mask (N, L), 1 = removed) for pictures; no gradients."""
        out = self.training_forward(x)
        return out["pred"], out["mask"]

    def method_loss(self, crops, outs):
        reconstruction = torch.stack(
            [
                mae_loss_func(x, out["pred"], out["mask"], self.patch_size, self.norm_pix_loss)
                for x, out in zip(crops, outs)
            ]
        ).mean()
        return reconstruction, {"train_reconstruction_loss": reconstruction}

    def param_groups(self) -> list[dict]:
        return super().param_groups() + [
            {"name": "decoder", "named_params": list(self.decoder.named_parameters())}
        ]
