"""A ViT encoder that can drop patches, composed of timm parts (MAE, He et al., CVPR 2022).

The parameter names are those of timm's ``VisionTransformer`` and of facebookresearch/mae
(``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.*``, ``norm.*``), so their
checkpoints, and solo-learn's, load by name. Mask convention everywhere: 1 = removed, 0 = kept.
"""

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from solo_ext.backbones.pos_embed import get_2d_sincos_pos_embed

# MAE's encoder norm; timm's VisionTransformer uses the same eps
_LayerNorm = partial(nn.LayerNorm, eps=1e-6)

# (N, 1 + L, D) tokens -> (N, D); an unknown mode is a KeyError naming it
_POOLS: dict[str, Callable[[Tensor], Tensor]] = {
    "cls": lambda tokens: tokens[:, 0],
    "mean": lambda tokens: tokens[:, 1:].mean(dim=1),
}
POOL_MODES = tuple(_POOLS)
if TYPE_CHECKING:  # the type checker sees a str; pydantic, below, the literal of the pool modes
    Feature = str
else:
    Feature = Literal[POOL_MODES]


class MaskedViTOutput(NamedTuple):
    """What :meth:`MaskedViT.forward_features` returns.

    Attributes:
        tokens: (N, 1 + L_keep, D), class token first, after the final LayerNorm.
        mask: (N, L) float, 1 = removed, 0 = kept, in the original patch order; None when
            nothing was masked.
        ids_restore: (N, L) long, position of each original patch in the shuffled order (what
            the decoder gathers with); None when nothing was masked.
        blocks: outputs (N, 1 + L_keep, D) of the requested blocks, before the final norm, in
            the order they were requested.
    """

    tokens: Tensor
    mask: Tensor | None
    ids_restore: Tensor | None
    blocks: tuple[Tensor, ...]


def init_mae_weights(module: nn.Module) -> None:
    """MAE's initialisation, applied with ``model.apply``: xavier-uniform Linear weights (as the
    official JAX ViT), zero Linear biases, LayerNorm weight 1 and bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    qkv_bias: bool,
    norm_layer: Callable[[int], nn.Module],
    drop_path_rate: float = 0.0,
) -> nn.Sequential:
    """``depth`` timm Blocks (fused attention left as timm sets it) with stochastic depth rising
    linearly from 0 to ``drop_path_rate`` over the blocks, as in timm."""
    # a Python ramp rather than torch.linspace: no tensor is made, so the model can be built on
    # the meta device
    drop_paths = [drop_path_rate * i / (depth - 1) for i in range(depth)] if depth > 1 else [0.0]
    return nn.Sequential(
        *[
            # timm annotates norm_layer as a class; it only calls it, and passes partials itself
            Block(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, norm_layer=norm_layer)  # type: ignore[arg-type]  # timm calls it: a partial works
            for rate in drop_paths
        ]
    )


class MaskedViT(nn.Module):
    """Vision Transformer encoder that runs on a random subset of its patches.

    ``forward(images)`` gives the stable feature (class token after the final norm, full image).
    The MAE training path is :meth:`forward_features` with ``mask_ratio > 0``; it also returns the
    outputs of chosen blocks (what MAGMA's layer-wise graph loss needs) without forward hooks.

    Args:
        img_size: side of the (square) input image, in pixels.
        patch_size: side of a patch; must divide ``img_size``.
        in_chans: input channels.
        embed_dim: token width D; divisible by ``num_heads`` and by 4 (2-D sin-cos).
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: hidden width of each block's MLP, relative to D.
        qkv_bias: bias in the qkv projection (True in MAE).
        drop_path_rate: stochastic depth of the last block, in [0, 1).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        # the arguments are checked where the config is declared (solo_ext.config); impossible
        # ones fail below with torch's or timm's own error
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.depth = depth
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # a frozen Parameter, not a buffer: it keeps timm's state-dict name, and since it never
        # needs a gradient, DDP with find_unused_parameters=False does not wait for one
        self.pos_embed = nn.Parameter(
            get_2d_sincos_pos_embed(embed_dim, self.grid_size, cls_token=True).unsqueeze(0),
            requires_grad=False,
        )
        self.blocks = build_blocks(
            embed_dim, depth, num_heads, mlp_ratio, qkv_bias, _LayerNorm, drop_path_rate
        )
        self.norm = _LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # the patch projection is a Linear on flattened patches: xavier on its 2-D view, as MAE
        # does (its bias keeps PyTorch's Conv2d default, also as MAE does)
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        # normal(0.02): timm's trunc_normal_(std=0.02) with cutoff 2 is the same in practice
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_mae_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (timm convention)."""
        return {"cls_token", "pos_embed"}

    @staticmethod
    def random_masking(
        x: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Keep a uniformly random subset of tokens per sample (MAE's argsort-of-noise trick).

        Args:
            x: (N, L, D) patch tokens.
            mask_ratio: fraction of tokens to remove, in [0, 1).
            noise: optional (N, L) scores whose lowest ``L_keep`` per row are kept; uniform random
                when None.

        Returns:
            x_kept (N, L_keep, D) with L_keep = int(L * (1 - mask_ratio)), in shuffled order;
            mask (N, L) float32, 1 = removed, 0 = kept, in the original order;
            ids_restore (N, L) long, with x_shuffled.gather(1, ids_restore) = original order.
        """
        n, length, dim = x.shape
        len_keep = int(length * (1 - mask_ratio))
        if not (0 <= mask_ratio < 1 and len_keep >= 1):
            raise ValueError(f"mask_ratio={mask_ratio!r}: must be in [0, 1) and keep one of {length} patches")
        if noise is None:
            noise = torch.rand(n, length, device=x.device)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_kept = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        # a patch is removed iff its rank in the shuffled order is past the kept prefix
        mask = (ids_restore >= len_keep).float()
        return x_kept, mask, ids_restore

    def _block_positions(self, block_indices: Iterable[int]) -> list[int]:
        # range indexing reads negative indices from the end and raises IndexError past either end
        return [range(self.depth)[index] for index in block_indices]

    def forward_features(
        self,
        x: Tensor,
        mask_ratio: float = 0.0,
        block_indices: Sequence[int] = (),
        noise: Tensor | None = None,
    ) -> MaskedViTOutput:
        """Encode images, optionally keeping only a random ``1 - mask_ratio`` of the patches.

        Args:
            x: (N, C, H, W) images, H = W = img_size.
            mask_ratio: fraction of patches removed per sample; 0 runs on all patches, unshuffled.
            block_indices: blocks whose outputs to return (negative counts from the end).
            noise: optional (N, L) masking scores (see :meth:`random_masking`).

        Returns:
            :class:`MaskedViTOutput` with tokens (N, 1 + L_keep, D) after the final norm, mask and
            ids_restore (N, L) or None, and the requested block outputs (before the final norm).
        """
        positions = self._block_positions(block_indices)
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]
        mask = ids_restore = None
        if mask_ratio != 0:  # random_masking refuses ratios outside [0, 1)
            tokens, mask, ids_restore = self.random_masking(tokens, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        captured = {}
        wanted = set(positions)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in wanted:
                captured[i] = tokens
        return MaskedViTOutput(self.norm(tokens), mask, ids_restore, tuple(captured[i] for i in positions))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) images -> (N, D) class token of the full image after the final norm."""
        return self.forward_features(x).tokens[:, 0]

    @staticmethod
    def pool(tokens: Tensor, mode: str) -> Tensor:
        """(N, 1 + L, D) tokens -> (N, D): ``"cls"`` takes the class token, ``"mean"`` averages
        the patch tokens (class token excluded)."""
        return _POOLS[mode](tokens)


# Each backbone: MaskedViT's defaults with these sizes; any MaskedViT keyword may be overridden.
# 12 heads for tiny and small, not timm's 3 and 6: solo-learn's MAE ViTs use 12, and the head
# count changes the function without changing any parameter shape, so its checkpoints would load
# silently into a 3/6-head model and compute something else.
BACKBONE_PRESETS: dict[str, dict[str, int]] = {
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 12},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 12},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "patch_size": 14},
}
BACKBONE_KWARGS: tuple[str, ...] = tuple(inspect.signature(MaskedViT.__init__).parameters)[1:]
# MaskedViT's own defaults (img_size 224, patch_size 16, ...), under every preset
_VIT_DEFAULTS = {
    k: p.default
    for k, p in inspect.signature(MaskedViT.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def backbone_arguments(name: str, kwargs: Mapping[str, object] | None = None) -> dict[str, Any]:
    """Every MaskedViT argument of backbone ``name`` with ``kwargs`` overriding its preset."""
    return {**_VIT_DEFAULTS, **BACKBONE_PRESETS[name], **(kwargs or {})}


def build_backbone(name: str, kwargs: Mapping[str, object] | None = None) -> MaskedViT:
    """``MaskedViT`` of backbone ``name`` (a key of :data:`BACKBONE_PRESETS`) with ``kwargs``
    overriding its preset sizes (``backbone.name``, ``backbone.kwargs``)."""
    return MaskedViT(**backbone_arguments(name, kwargs))


def _factory(name: str) -> Callable[..., MaskedViT]:
    def make(**overrides: object) -> MaskedViT:
        return build_backbone(name, overrides)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"Masked ViT {name}; any MaskedViT keyword may be overridden."
    return make


BACKBONES: dict[str, Callable[..., MaskedViT]] = {name: _factory(name) for name in BACKBONE_PRESETS}
