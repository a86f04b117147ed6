"""U-MAE's uniformity regularizer (Zhang et al., NeurIPS 2022) on the cls features."""

from solo_ext.losses.uniformity import uniformity_loss
from solo_ext.regularizers.base import Regularizer


class Uniformity(Regularizer):
    name = "uniformity"

    def __call__(self, out, block_positions):
        return uniformity_loss(self.features_of(out, block_positions)), {}
