"""The one place that talks to torch.distributed: world size, rank, and a gradient-correct gather.

Why the gather's backward sums. A regularizer on the global batch is computed identically on
every rank from the gathered features, so each rank holds the same loss R(z_1, ..., z_W). The
gradient that training needs is dR/dθ = Σ_r dR/dz_r · dz_r/dθ, and DDP hands each parameter the
*average* over ranks of the local parameter gradients. With a backward that returns, on rank r,
the all-reduce SUM over ranks of dR/dz_r (= W · dR/dz_r, since every rank's copy of R is the same),
DDP's average gives (1/W) Σ_r W · dR/dz_r · dz_r/dθ = dR/dθ: exactly the single-process gradient
on the full batch. solo-learn's current ``GatherLayer`` (solo/utils/misc.py) all-reduces the
gradient in the same way. The gathers of the U-MAE and M-MAE code (their loss_func.py) return only
the local slice (dR/dz_r, no reduction), so after DDP's average their regularizer acts with weight
lambda / W and its strength changes with the number of GPUs: to train as their published runs on
W_paper GPUs, use weight = lambda / W_paper here (README, "Reproducing the papers").
"""

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    """Rank of this process in the default group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def _check_equal_shapes(x: Tensor) -> None:
    # all_gather needs equal shapes everywhere; unequal ones would fail deep inside the backend or
    # hang. One tiny collective turns that into a clear error on every rank at once (they all
    # compare the same gathered list, so they all raise together).
    shape = torch.tensor(x.shape, dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(other, shape) for other in shapes):
        sizes = [tuple(s.tolist()) for s in shapes]
        raise ValueError(
            f"gather needs the same shape on every rank, got {sizes} (rank order); "
            "use drop_last=True so every process gets full batches"
        )


class _GatherWithSummedGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward all-reduces (sums) the gradient before slicing."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.contiguous()
        _check_equal_shapes(x)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        ctx.rank = dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # all_reduce works in place; autograd may share grad with other consumers, so copy it
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def gather(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0, in rank order, keeping gradients correct.

    The backward sums the gradient over ranks before taking this rank's rows, so that a loss
    computed identically on every rank from the gathered batch gets, after DDP's gradient
    averaging, the same parameter gradients as one process on the whole batch (see the module
    docstring for the derivation and how this differs from U-MAE and M-MAE).

    Args:
        x: (n, ...) this rank's rows; n and the trailing shape must be equal on all ranks
            (checked; a ValueError names the shapes).

    Returns:
        (W·n, ...) the global batch, rows of rank r at [r·n, (r+1)·n); ``x`` itself when not distributed.
    """
    if get_world_size() == 1:
        return x
    return _GatherWithSummedGrad.apply(x)
