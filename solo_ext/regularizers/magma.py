"""MAGMA's layer-wise manifold regularizer (WACV 2025).

For each block l in ``layers``, an RBF graph is built from block l's mean visible-patch features;
the target block's features (the last block by default) must be smooth on it:
tr(YᵀLY)/b² with L the normalised graph Laplacian. Per process by default, as published;
``gather: true`` builds the graph over the global batch.
"""

import torch

from solo_ext.args.checks import check_bool, check_number
from solo_ext.losses.magma import magma_loss
from solo_ext.regularizers.base import Regularizer, normalise_block, regularized_features
from solo_ext.utils.errors import ConfigError


class Magma(Regularizer):
    name = "magma"
    params = {
        "layers": [],
        "target_layer": -1,
        "rbf_scale": 1.0,
        "fixed_gamma": None,
        "scale_euclidean_distance": False,
    }
    default_gather = False

    @classmethod
    def check_params(cls, spec, key, depth):
        layers = spec["layers"]
        if not isinstance(layers, list | tuple) or not layers:
            raise ConfigError(f"{key}.layers={layers!r}: must be a non-empty list of block indices")
        target = normalise_block(f"{key}.target_layer", spec["target_layer"], depth)
        layers = [normalise_block(f"{key}.layers[{i}]", layer, depth) for i, layer in enumerate(layers)]
        # As in MAGMA's code, the target block itself contributes no term.
        layers = sorted(set(layers) - {target})
        if not layers:
            raise ConfigError(f"{key}.layers={spec['layers']!r}: holds only the target block {target}")
        spec["layers"], spec["target_layer"] = layers, target
        check_number(f"{key}.rbf_scale", spec["rbf_scale"], low=0, low_open=True)
        if spec["fixed_gamma"] is not None:
            check_number(f"{key}.fixed_gamma", spec["fixed_gamma"], low=0, low_open=True)
        check_bool(f"{key}.scale_euclidean_distance", spec["scale_euclidean_distance"])
        return spec

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
