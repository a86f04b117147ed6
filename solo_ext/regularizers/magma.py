"""MAGMA's layer-wise manifold regularizer (WACV 2025).

For each block l in ``layers``, an RBF graph is built from block l's mean visible-patch features;
the target block's features (the last block by default) must be smooth on it:
tr(YᵀLY)/b² with L the normalised graph Laplacian. Per process by default, as published;
``gather: true`` builds the graph over the global batch.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import Field, ValidationInfo, model_validator

from solo_ext.losses.magma import magma_loss
from solo_ext.regularizers.base import (
    BlockIndex,
    Regularizer,
    RegularizerSpec,
    normalise_block,
    regularized_features,
)
from solo_ext.utils.declared import number_in
from solo_ext.utils.errors import FieldError

Positive = number_in(0, low_open=True)


class MagmaSpec(RegularizerSpec):
    layers: Annotated[list[BlockIndex], Field(min_length=1)]
    target_layer: BlockIndex = -1
    rbf_scale: Positive = 1.0
    fixed_gamma: Positive | None = None
    scale_euclidean_distance: bool = False
    gather: bool = False

    @model_validator(mode="after")
    def _blocks(self, info: ValidationInfo) -> MagmaSpec:
        depth = (info.context or {}).get("depth")
        target = normalise_block("target_layer", self.target_layer, depth)
        given = self.layers
        layers = [normalise_block(f"layers[{i}]", layer, depth) for i, layer in enumerate(given)]
        # As in MAGMA's code, the target block itself contributes no term.
        self.layers, self.target_layer = sorted(set(layers) - {target}), target
        if not self.layers:
            raise FieldError("layers", given, f"holds only the target block {target}")
        return self


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
