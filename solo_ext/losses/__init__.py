"""Loss functions: pure tensor functions, one concept per module.

- :mod:`solo_ext.losses.mae`: MAE reconstruction loss (He et al., CVPR 2022).
- :mod:`solo_ext.losses.uniformity`: U-MAE uniformity loss (Zhang et al., NeurIPS 2022).
- :mod:`solo_ext.losses.tcr`: M-MAE total coding rate loss (Tan et al., ICML 2024).
- :mod:`solo_ext.losses.magma`: MAGMA graph-Laplacian loss (WACV 2025).

None of them gathers across processes, logs or reads a config; callers gather with
:func:`solo_ext.utils.dist.gather` first when they want the global batch.
"""

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
from torch import Tensor

_P = ParamSpec("_P")
_R = TypeVar("_R")


def full_precision(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a loss in float32 (float64 when any input is float64) with autocast turned off.

    Under bf16/fp16 autocast the Gram matmuls of the regularizers would otherwise run in half
    precision, and the linear-algebra kernels behind the log-det reject half types; casting every
    floating tensor argument *before* the first matmul keeps the whole computation in float32.
    float64 inputs stay float64 so that tests can compare against float64 references.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound = signature.bind(*args, **kwargs)
        floats = {
            name: value
            for name, value in bound.arguments.items()
            if isinstance(value, Tensor) and value.is_floating_point()
        }
        if not floats:
            return fn(*args, **kwargs)
        wide = any(value.dtype == torch.float64 for value in floats.values())
        dtype = torch.float64 if wide else torch.float32
        device_type = next(iter(floats.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            for name, value in floats.items():
                bound.arguments[name] = value.to(dtype)
            return fn(*bound.args, **bound.kwargs)

    return wrapper
