"""MAE (He et al., 2022): encoder on the visible patches, light decoder, MSE on masked patches."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from solo_ext.backbones.decoder import MAEDecoder
from solo_ext.backbones.loading import (
    extract_decoder_state_dict,
    load_backbone_weights,
    load_strict,
    read_checkpoint,
)
from solo_ext.backbones.vit import Feature
from solo_ext.losses.mae import mae_loss_func
from solo_ext.methods.base import BaseMethod
from solo_ext.regularizers.base import RegularizerSpec
from solo_ext.utils.declared import BelowOne, Declared, Name, PositiveInt, Rule, plain
from solo_ext.utils.index_noise import index_noise


class MAEKwargs(Declared):
    decoder_embed_dim: PositiveInt = 512
    decoder_depth: PositiveInt = 8
    decoder_num_heads: PositiveInt = 16
    mask_ratio: BelowOne = 0.75
    norm_pix_loss: bool = False
    online_features: Feature = "cls"
    # Masks drawn from (seed, epoch, crop, sample index) instead of the RNG: the same sample gets
    # the same mask whatever the number of processes (used to prove DDP equivalence).
    index_masks: bool = False
    # Train the online probe on features of the full, unmasked crop (one extra no-grad encoder
    # pass) instead of the masked pass's: the probe then sees in training what it is evaluated on.
    online_clean_features: bool = False
    online_batchnorm: bool = False
    # continue pretraining from these weights: a run folder or checkpoint of ours or solo-learn's,
    # facebookresearch/mae's checkpoint, a timm/safetensors file, or a Hugging Face ViTMAE folder
    # (or a solo_ext.export folder); the encoder and, where present, the decoder, loaded strictly
    init_from: Name | None = None

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "decoder_num_heads",
            lambda mk, _: mk.decoder_embed_dim % mk.decoder_num_heads == 0,
            lambda mk, _: f"must divide decoder_embed_dim={mk.decoder_embed_dim}",
        ),
        Rule(
            "decoder_embed_dim",
            lambda mk, _: mk.decoder_embed_dim % 4 == 0,
            "must be divisible by 4 (2-D sin-cos)",
        ),
        Rule(
            "mask_ratio",
            lambda mk, ctx: "num_patches" not in ctx or int(ctx["num_patches"] * (1 - mk.mask_ratio)) >= 1,
            "keeps no patch of the image; must leave at least one visible",
        ),
    )

    def dump(self) -> dict[str, Any]:
        """The values written to args.json."""
        return self.model_dump()

    def regularizer_specs(self) -> dict[str, RegularizerSpec]:
        """The validated block of each regularizer given, by name (plain MAE has none)."""
        return {}


class MAE(BaseMethod):
    # method_kwargs, declared here and validated by the config layer (solo_ext.config.schema)
    Kwargs: ClassVar[type[MAEKwargs]] = MAEKwargs

    def __init__(self, cfg, kwargs: MAEKwargs | None = None):
        """``cfg``: a parsed config (solo_ext.config.pretrain.parse_run); ``kwargs``: its
        ``method_kwargs`` as the config layer validated them (the runner passes them, so nothing
        is validated twice); without them they are read from ``cfg`` (a config read back, a
        test's)."""
        super().__init__(cfg)
        mk = kwargs if kwargs is not None else self.stored_kwargs(cfg)
        self.kwargs = mk
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
        if mk.init_from:
            self.init_weights_from(mk.init_from)

    def stored_kwargs(self, cfg) -> MAEKwargs:
        """``cfg.method_kwargs`` (as the config layer wrote them) validated against ``Kwargs``,
        with the backbone's depth and patch count as the validation context."""
        context = {"depth": len(self.backbone.blocks), "num_patches": self.backbone.num_patches}
        return self.Kwargs.model_validate(plain(cfg.method_kwargs), context=context)

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
