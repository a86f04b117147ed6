"""LARS: layer-wise adaptive rate scaling (You et al., "Large Batch Training of Convolutional
Networks", 2017), in the variant solo-learn uses (from Lightning Bolts).

For each parameter p with gradient g, unless p is 1-D and ``exclude_bias_n_norm`` is set, and
when both ||p|| and ||g|| are nonzero:

    local_lr = eta * ||p|| / (||g|| + weight_decay * ||p|| + eps)
    local_lr = min(local_lr / lr, 1)            if clip_lr
    g        = (g + weight_decay * p) * local_lr

then SGD with momentum (and optional Nesterov) applies g with the group's lr. Weight decay lives
inside that branch: an excluded 1-D parameter, or one with a zero norm, takes a plain SGD step
without weight decay.

Ours, not ``timm.optim.Lars``: timm's scales only groups with weight decay (unless
``always_adapt``), still decays a parameter whose weight or gradient norm is zero, and has no
per-tensor exclusion of 1-D parameters; solo-learn's recipes rely on all three
(tests/optim/test_lars.py shows the first).
"""

from collections.abc import Callable
from typing import Annotated, Any, overload

import torch
from pydantic import ConfigDict, Field, validate_call
from torch import Tensor
from torch.optim import Optimizer

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class LARS(Optimizer):
    """SGD with momentum and layer-wise trust ratios (see the module docstring).

    Args:
        params: parameters or param-group dicts.
        lr: learning rate.
        momentum: momentum factor.
        dampening: momentum dampening.
        weight_decay: L2 penalty, applied inside the LARS scaling.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        eta: trust coefficient.
        eps: added to the denominator of the trust ratio.
        clip_lr: cap the scaled rate at the group's lr.
        exclude_bias_n_norm: leave 1-D parameters (biases, norm scales) out of the scaling and
            of weight decay.
    """

    # ranges declared on the signature (a pydantic ValidationError, a ValueError, names the argument)
    @validate_call(config=ConfigDict(arbitrary_types_allowed=True))
    def __init__(
        self,
        params: Any,  # an iterable of tensors or of param-group dicts, passed on as is
        lr: NonNegative,
        momentum: NonNegative = 0.0,
        dampening: NonNegative = 0.0,
        weight_decay: NonNegative = 0.0,
        nesterov: bool = False,
        eta: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3,
        eps: NonNegative = 1e-8,
        clip_lr: bool = False,
        exclude_bias_n_norm: bool = False,
    ) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True: needs momentum > 0 and dampening = 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "eta": eta,
            "eps": eps,
            "clip_lr": clip_lr,
            "exclude_bias_n_norm": exclude_bias_n_norm,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _scaled_grad(p: Tensor, grad: Tensor, group: dict) -> Tensor:
        """(g + wd * p) * local_lr where both norms are nonzero, else g; computed with tensor
        ops only, so a GPU step never waits on a host synchronisation."""
        weight_decay = group["weight_decay"]
        p_norm = torch.linalg.vector_norm(p)
        g_norm = torch.linalg.vector_norm(grad)
        local_lr = group["eta"] * p_norm / (g_norm + weight_decay * p_norm + group["eps"])
        if group["clip_lr"] and group["lr"] > 0:
            local_lr = torch.clamp(local_lr / group["lr"], max=1.0)
        active = (p_norm > 0) & (g_norm > 0)
        scale = torch.where(active, local_lr, 1.0)
        decay = active.to(p.dtype) * weight_decay
        return (grad + decay * p) * scale

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim != 1 or not group["exclude_bias_n_norm"]:
                    grad = self._scaled_grad(p, grad, group)
                if momentum != 0:
                    state = self.state[p]
                    buffer = state.get("momentum_buffer")
                    if buffer is None:
                        buffer = state["momentum_buffer"] = grad.detach().clone()
                    else:
                        buffer.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                    grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                p.add_(grad, alpha=-group["lr"])
        return loss
