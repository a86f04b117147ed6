"""MAE's lightweight decoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", 2022).

Parameter names follow facebookresearch/mae and solo-learn (``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``) so full
checkpoints, decoder included, load by name.
"""

import math

import torch
from torch import Tensor, nn

from solo_ext.backbones.pos_embed import get_2d_sincos_pos_embed
from solo_ext.backbones.vit import (
    _LayerNorm,
    build_blocks,
    init_mae_weights,
)


class MAEDecoder(nn.Module):
    """Predicts the pixels of every patch from the encoder's visible tokens.

    Args:
        in_dim: width of the encoder tokens.
        embed_dim: decoder width (``method_kwargs.decoder_embed_dim``).
        depth: decoder blocks (``method_kwargs.decoder_depth``).
        num_heads: attention heads (``method_kwargs.decoder_num_heads``); must divide embed_dim.
        num_patches: L, patches of the full image (a square grid).
        patch_size: p, side of a patch in pixels.
        in_chans: image channels.
        mlp_ratio: hidden width of each block's MLP, relative to embed_dim.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_patches: int,
        patch_size: int,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        # sizes are checked where the config is declared (solo_ext.config); num_patches is the
        # encoder's, a square grid by construction
        grid_size = math.isqrt(num_patches)

        self.num_patches = num_patches
        self.patch_size = patch_size
        self.in_chans = in_chans

        self.decoder_embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # frozen Parameter rather than buffer, for the checkpoint name (see MaskedViT.pos_embed)
        self.decoder_pos_embed = nn.Parameter(
            get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=True).unsqueeze(0), requires_grad=False
        )
        # LayerNorm eps 1e-6 as facebookresearch/mae's decoder and Hugging Face's ViTMAE (one eps
        # for encoder and decoder), so exported weights compute exactly what they computed here
        # (solo-learn's decoder uses PyTorch's default 1e-5)
        self.decoder_blocks = build_blocks(embed_dim, depth, num_heads, mlp_ratio, True, _LayerNorm)
        self.decoder_norm = _LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size * patch_size * in_chans)

        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_mae_weights)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        """Reconstruct all patches.

        Args:
            tokens: (N, 1 + L_keep, in_dim) encoder output, class token first, kept patches in
                shuffled order (``MaskedViTOutput.tokens``).
            ids_restore: (N, L) from the encoder's random masking.

        Returns:
            pred (N, L, p*p*in_chans), patches in the original row-major order, pixels laid out
            (row, col, channel) within a patch.
        """
        x = self.decoder_embed(tokens)
        n, num_tokens, dim = x.shape
        num_masked = ids_restore.shape[1] - (num_tokens - 1)
        patches = torch.cat([x[:, 1:], self.mask_token.to(x.dtype).expand(n, num_masked, -1)], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:]
