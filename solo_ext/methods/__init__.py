"""Methods by name (solo-learn's METHODS registry). Each declares its ``method_kwargs`` beside its
code as ``Kwargs``; the config layer's registry of them is derived from this one."""

from solo_ext.methods.base import BaseMethod
from solo_ext.methods.mae import MAE
from solo_ext.methods.mae_reg import UMAE, MAERegularized

METHODS: dict[str, type[MAE]] = {
    "mae": MAE,
    "mae-reg": MAERegularized,
    "u-mae": UMAE,
}

__all__ = ["METHODS", "BaseMethod", "MAE", "MAERegularized", "UMAE"]
