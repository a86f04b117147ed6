"""M-MAE's total-coding-rate regularizer (Tan et al., ICML 2024): -logdet(I + mu/d · ZᵀZ)."""

from typing import ClassVar

from solo_ext.losses.tcr import tcr_loss
from solo_ext.regularizers.base import Regularizer, RegularizerSpec
from solo_ext.utils.declared import Positive


class TCRSpec(RegularizerSpec):
    mu: Positive = 1.0
    centering: bool = False


class TCR(Regularizer):
    name = "tcr"
    Spec: ClassVar[type[RegularizerSpec]] = TCRSpec

    def __call__(self, out, block_positions):
        z = self.features_of(out, block_positions)
        return tcr_loss(z, mu=self.spec["mu"], centering=self.spec["centering"]), {}
