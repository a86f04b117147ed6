"""M-MAE's total-coding-rate regularizer (Tan et al., ICML 2024): -logdet(I + mu/d · ZᵀZ)."""

from solo_ext.args.checks import check_bool, check_number
from solo_ext.losses.tcr import tcr_loss
from solo_ext.regularizers.base import Regularizer


class TCR(Regularizer):
    name = "tcr"
    params = {"mu": 1.0, "centering": False}

    @classmethod
    def check_params(cls, spec, key, depth):
        check_number(f"{key}.mu", spec["mu"], low=0, low_open=True)
        check_bool(f"{key}.centering", spec["centering"])
        return spec

    def __call__(self, out, block_positions):
        z = self.features_of(out, block_positions)
        return tcr_loss(z, mu=self.spec["mu"], centering=self.spec["centering"]), {}
