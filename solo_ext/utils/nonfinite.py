"""Stop non-finite losses before they reach the weights, without a host synchronisation per step.

Reading a loss on the host (``.item()``) every step stalls a GPU's queue. The guard instead keeps
its evidence on the device:

- :meth:`NonFiniteGuard.observe` (in the training step) records the total loss and, per logged
  component, whether it has ever been non-finite;
- :meth:`NonFiniteGuard.protect` (after backward, before the optimizer update) sets one device
  flag when the loss or any gradient is non-finite. Fused Adam/AdamW read it as ``found_inf``
  and skip the update in their kernel (the way ``torch.amp.GradScaler`` skips steps); any other
  optimizer gets zero gradients for that step, so its update stays finite (weight decay and
  momentum still act). The first bad global step is kept on the device;
- :meth:`NonFiniteGuard.raise_if_tripped` reads the flag on the host (a synchronisation) and
  raises :class:`~solo_ext.utils.errors.NonFiniteLossError` naming the step and the component.
  It is called at logging steps, at the end of an epoch and before a checkpoint is saved.
"""

from __future__ import annotations

import torch

from solo_ext.utils.dist import is_distributed
from solo_ext.utils.errors import NonFiniteLossError


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's update kernel reads ``found_inf`` (torch's fused implementations)."""
    return bool(optimizer.defaults.get("fused"))


class NonFiniteGuard:
    def __init__(self) -> None:
        self._total: torch.Tensor | None = None
        self._components: dict[str, torch.Tensor] = {}
        self._first_bad_step: torch.Tensor | None = None

    def observe(self, total: torch.Tensor, components: dict) -> None:
        """Remember this step's total loss and which logged components were non-finite."""
        self._total = total.detach()
        for name, value in components.items():
            if torch.is_tensor(value):
                bad = ~torch.isfinite(value.detach()).all()
                seen = self._components.get(name)
                self._components[name] = bad if seen is None else seen | bad

    def protect(self, optimizer: torch.optim.Optimizer, global_step: int) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        device = grads[0].device if grads else (self._total.device if self._total is not None else None)
        if device is None:
            return
        found = torch.zeros(1, device=device)
        if grads:
            # torch's AMP helper: one fused pass over all gradients, sets found when any is non-finite
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones(1, device=device))
        if self._total is not None:
            found = torch.maximum(found, (~torch.isfinite(self._total)).float().reshape(1))
        if is_distributed():
            # every process must skip the same updates, or their weights part ways; a device-side
            # collective, not a host read
            torch.distributed.all_reduce(found, op=torch.distributed.ReduceOp.MAX)
        flag = found.reshape(())
        if is_fused(optimizer):
            optimizer.found_inf = flag
            optimizer.grad_scale = None
        elif grads:
            for grad in grads:
                grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            torch._foreach_mul_(grads, 1.0 - flag)
        step = torch.tensor(global_step, device=device)
        first = self._first_bad_step
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=device)
        self._first_bad_step = torch.where((flag > 0) & (first < 0), step, first)

    def raise_if_tripped(self, epoch: int) -> None:
        """Raise, naming the first bad step and the components, if any update was skipped."""
        if self._first_bad_step is None:
            return
        step = int(self._first_bad_step.item())
        if step < 0:
            return
        bad = [name for name, flag in self._components.items() if bool(flag)]
        raise NonFiniteLossError(
            f"non-finite loss at global step {step} (epoch {epoch} or before) in "
            f"{', '.join(bad) or 'a gradient'}; no non-finite value reached the weights (such updates "
            "were skipped) and no checkpoint was written after it (lower the lr or a regularizer "
            "weight, or use precision=32, and resume)"
        )
