"""Regularizers by name: adding one is one file and one line here."""

from solo_ext.regularizers.base import Regularizer
from solo_ext.regularizers.magma import Magma
from solo_ext.regularizers.tcr import TCR
from solo_ext.regularizers.uniformity import Uniformity

REGULARIZERS: dict[str, type[Regularizer]] = {cls.name: cls for cls in (Uniformity, TCR, Magma)}

__all__ = ["REGULARIZERS", "Regularizer"]
