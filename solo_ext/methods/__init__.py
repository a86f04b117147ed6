"""Methods by name (solo-learn's METHODS registry)."""

from solo_ext.methods.base import BaseMethod
from solo_ext.methods.mae import MAE
from solo_ext.methods.mae_reg import UMAE, MAERegularized

METHODS: dict[str, type[BaseMethod]] = {
    "mae": MAE,
    "mae-reg": MAERegularized,
    "u-mae": UMAE,
}

__all__ = ["METHODS", "BaseMethod", "MAE", "MAERegularized", "UMAE"]
