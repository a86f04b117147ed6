"""MAGMA's layer-wise manifold regularizer (WACV 2025).

For each block l in ``layers``, an RBF graph is built from block l's mean visible-patch features;
the target block's features (the last block by default) must be smooth on it:
tr(YᵀLY)/b² with L the normalised graph Laplacian. Per process by default, as published;
``gather: true`` builds the graph over the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import torch
from pydantic import Field, ValidationInfo, model_validator

from solo_ext.losses.magma import magma_loss
from solo_ext.regularizers.base import (
    BlockIndex,
    Regularizer,
    RegularizerSpec,
    blocks_text,
    normalise_block,
    outside,
    regularized_features,
)
from solo_ext.utils.declared import Positive, Rule


class MagmaSpec(RegularizerSpec):
    layers: Annotated[list[BlockIndex], Field(min_length=1)]
    target_layer: BlockIndex = -1
    rbf_scale: Positive = 1.0
    fixed_gamma: Positive | None = None
    scale_euclidean_distance: bool = False
    gather: bool = False

    rules: ClassVar = (
        *RegularizerSpec.rules,
        Rule("target_layer", lambda spec, ctx: not outside(spec.target_layer, ctx.get("depth")), blocks_text),
        Rule(
            lambda spec, ctx: f"layers[{_first_outside(spec, ctx)}]",
            lambda spec, ctx: _first_outside(spec, ctx) is None,
            blocks_text,
        ),
        Rule("layers", lambda spec, ctx: bool(_terms(spec, ctx.get("depth"))), "holds only the target block"),
    )

    @model_validator(mode="after")
    def _blocks_normalised(self, info: ValidationInfo) -> MagmaSpec:
        depth = (info.context or {}).get("depth")
        self.layers, self.target_layer = _terms(self, depth), normalise_block(self.target_layer, depth)
        return self


def _first_outside(spec: MagmaSpec, context: Mapping) -> int | None:
    return next((i for i, layer in enumerate(spec.layers) if outside(layer, context.get("depth"))), None)


def _terms(spec: MagmaSpec, depth: int | None) -> list[int]:
    """The blocks whose graphs enter the loss: as in MAGMA's code, the target block itself
    contributes no term."""
    target = normalise_block(spec.target_layer, depth)
    return sorted({normalise_block(layer, depth) for layer in spec.layers} - {target})


class Magma(Regularizer):
    name = "magma"
    Spec: ClassVar[type[RegularizerSpec]] = MagmaSpec

    def blocks(self):
        return set(self.spec["layers"]) | {self.spec["target_layer"]}

    def _block_features(self, out, index, block_positions):
        return regularized_features(out, index, block_positions, self.gather)

    def __call__(self, out, block_positions):
        spec = self.spec
        y = self._block_features(out, spec["target_layer"], block_positions)
        terms, logs = [], {}
        for layer in spec["layers"]:
            x = self._block_features(out, layer, block_positions)
            term = magma_loss(
                x,
                y,
                rbf_scale=spec["rbf_scale"],
                fixed_gamma=spec["fixed_gamma"],
                scale_euclidean_distance=spec["scale_euclidean_distance"],
            )
            logs[f"train_magma_layer{layer}_to_layer{spec['target_layer']}_loss"] = term
            terms.append(term)
        # The mean over the actual terms (MAGMA's code divided by len(layers), which also counted
        # a skipped target entry and halved the single term of a two-layer list).
        return torch.stack(terms).mean(), logs
