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

Under fp16 (``precision: 16-mixed``) ``torch.amp.GradScaler`` owns overflow: it finds
non-finite scaled gradients itself, skips that update and lowers its scale, which it does
routinely while it searches for a scale. The guard then leaves the gradients and the optimizer's
``grad_scale``/``found_inf`` alone, records only a non-finite forward loss, and counts the steps
the scaler skipped (:meth:`NonFiniteGuard.before_step` / :meth:`NonFiniteGuard.after_step`, on
the device). Skipping without end is divergence too: when the scale falls below
:data:`SCALE_FLOOR` the gradients are not finite even unscaled, and the guard trips as for a
non-finite loss.
"""

from __future__ import annotations

import torch

from solo_ext.utils.dist import is_distributed
from solo_ext.utils.errors import NonFiniteLossError

# Under a GradScaler: a scale below this (2^-16, after 32 halvings from the default 2^16 with no
# successful step between) means that even unscaled gradients overflow. Every skip halves the
# scale, so from any float32 scale the rule trips after at most about 150 skipped steps.
SCALE_FLOOR = 2.0**-16


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's update kernel reads ``found_inf`` (torch's fused implementations)."""
    return bool(optimizer.defaults.get("fused"))


class NonFiniteGuard:
    def __init__(self) -> None:
        self._total: torch.Tensor | None = None
        self._components: dict[str, torch.Tensor] = {}
        self._first_bad_step: torch.Tensor | None = None
        # GradScaler bookkeeping (fp16 only), on the device: the scale this step was taken with,
        # skipped steps in all and in a row, and whether the scale fell below SCALE_FLOOR
        self._scale_before: torch.Tensor | None = None
        self._scale_step = -1
        self._last_scale: torch.Tensor | None = None
        self.skipped_steps: torch.Tensor | None = None
        self._skipped_in_row: torch.Tensor | None = None
        self._below_floor: torch.Tensor | None = None
        self._restored_skipped = 0

    def observe(self, total: torch.Tensor, components: dict) -> None:
        """Remember this step's total loss and which logged components were non-finite."""
        self._total = total.detach()
        for name, value in components.items():
            if torch.is_tensor(value):
                bad = ~torch.isfinite(value.detach()).all()
                seen = self._components.get(name)
                self._components[name] = bad if seen is None else seen | bad

    def protect(self, optimizer: torch.optim.Optimizer, global_step: int, scaler=None) -> None:
        """After backward, before the update. With a GradScaler (``scaler``), only the forward
        loss is checked: the scaler reads the gradients, skips the update and owns the optimizer's
        ``grad_scale``/``found_inf``."""
        if scaler is not None:
            if self._total is not None:
                self._record((~torch.isfinite(self._total)).float().reshape(1), global_step)
            return
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
        flag = self._record(found, global_step)
        if is_fused(optimizer):
            optimizer.found_inf = flag  # type: ignore[attr-defined]  # read by torch's fused step
            optimizer.grad_scale = None  # type: ignore[attr-defined]  # read by torch's fused step
        elif grads:
            for grad in grads:
                grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            torch._foreach_mul_(grads, 1.0 - flag)

    def _record(self, found: torch.Tensor, global_step: int) -> torch.Tensor:
        """Agree on ``found`` (1 where this step is bad) over processes and keep the first bad
        step; returns the agreed flag (a 0-d device tensor)."""
        if is_distributed():
            # every process must skip the same updates, or their weights part ways; a device-side
            # collective, not a host read
            torch.distributed.all_reduce(found, op=torch.distributed.ReduceOp.MAX)
        flag = found.reshape(())
        self._mark(flag > 0, global_step)
        return flag

    def _mark(self, bad: torch.Tensor, global_step: int) -> None:
        step = torch.tensor(global_step, device=bad.device)
        first = self._first_bad_step
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=bad.device)
        self._first_bad_step = torch.where(bad & (first < 0), step, first)

    # ----------------------------------------------------------------- GradScaler (fp16)
    def before_step(self, scaler, global_step: int) -> None:
        """Before the update of ``global_step``: remember the scale its gradients were scaled with."""
        scale = getattr(scaler, "_scale", None)
        if scale is not None:
            self._scale_before, self._scale_step = scale.detach().clone(), global_step

    def after_step(self, scaler) -> None:
        """After the update: the scaler lowers its scale exactly when it skipped the step (its
        backoff factor is below 1), so a lower scale counts one skipped step; all on the device."""
        if self._scale_before is None:
            return
        scale, before = scaler._scale.detach(), self._scale_before
        self._scale_before = None
        skipped = (scale < before).long().reshape(())
        if self.skipped_steps is None:
            self.skipped_steps = torch.full((), self._restored_skipped, dtype=torch.long, device=scale.device)
            self._skipped_in_row = torch.zeros((), dtype=torch.long, device=scale.device)
            self._below_floor = torch.zeros((), dtype=torch.bool, device=scale.device)
        # set together with skipped_steps, above or at an earlier step
        assert self._skipped_in_row is not None and self._below_floor is not None
        self.skipped_steps += skipped
        self._skipped_in_row = (self._skipped_in_row + 1) * skipped
        below = (scale.reshape(()) < SCALE_FLOOR) & (skipped > 0)
        self._below_floor |= below
        self._mark(below, self._scale_step)
        self._last_scale = scale

    def scaler_logs(self) -> dict[str, torch.Tensor]:
        """The scale and the skipped steps so far, as device tensors for ``log_dict``."""
        if self.skipped_steps is None:
            return {}
        assert self._last_scale is not None  # set by the after_step that set skipped_steps
        scale = self._last_scale.reshape(()).float()
        return {"amp_scale": scale, "amp_skipped_steps": self.skipped_steps.float()}

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the skipped-step count (read on the host, at saving only)."""
        skipped = self._restored_skipped if self.skipped_steps is None else int(self.skipped_steps.item())
        return {"amp_skipped_steps": skipped}

    def load_state_dict(self, state: dict) -> None:
        self._restored_skipped = int(state.get("amp_skipped_steps", 0))
        self.skipped_steps = None

    def raise_if_tripped(self, epoch: int) -> None:
        """Raise, naming the first bad step and the components, if any update was skipped."""
        if self._first_bad_step is None:
            return
        step = int(self._first_bad_step.item())
        if step < 0:
            return
        bad = [name for name, flag in self._components.items() if bool(flag)]
        if self._below_floor is not None and bool(self._below_floor):
            # set together with _below_floor (after_step)
            assert self._skipped_in_row is not None and self.skipped_steps is not None
            bad.append(
                f"the gradients (GradScaler skipped {int(self._skipped_in_row.item())} steps in a row, "
                f"{int(self.skipped_steps.item())} in all, and its scale fell below {SCALE_FLOOR:g})"
            )
        raise NonFiniteLossError(
            f"non-finite loss at global step {step} (epoch {epoch} or before) in "
            f"{', '.join(bad) or 'a gradient'}; no non-finite value reached the weights (such updates "
            "were skipped) and no checkpoint was written after it (lower the lr or a regularizer "
            "weight, or use precision=32, and resume)"
        )
