"""Optimizers by name and the learning-rate schedules (pure functions of the step)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from solo_ext.optim.lars import LARS

# By name, as timm's create_optimizer_v2 does, but its "lars" is timm's Lars, not solo-learn's (lars.py)
OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "lars": LARS,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def split_weight_decay(groups: Iterable[dict], no_decay_names: set[str]) -> list[dict]:
    """Split each named group into ``name`` and ``name_no_decay``: biases, norm weights (1-D tensors)
    and tokens listed in ``no_decay_names`` (cls_token, pos_embed, mask_token) get no weight decay."""
    out = []
    for group in groups:
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, param in group["named_params"]:
            if not param.requires_grad:
                continue
            short = name.rsplit(".", 1)[-1]
            (no_decay if param.ndim <= 1 or short in no_decay_names else decay).append(param)
        base = {k: v for k, v in group.items() if k != "named_params"}
        if decay:
            out.append({**base, "params": decay})
        if no_decay:
            out.append({**base, "name": base["name"] + "_no_decay", "params": no_decay, "weight_decay": 0.0})
    return out


def build_param_groups(named_groups: list[dict], exclude_bias_n_norm_wd: bool, no_decay_names: set[str]):
    """``named_groups``: dicts with ``name``, ``named_params`` (an iterable of (name, param)) and
    optional ``lr`` / ``weight_decay``. Frozen parameters are left out."""
    if exclude_bias_n_norm_wd:
        return split_weight_decay(named_groups, no_decay_names)
    out = []
    for group in named_groups:
        params = [p for _, p in group["named_params"] if p.requires_grad]
        if params:
            out.append({**{k: v for k, v in group.items() if k != "named_params"}, "params": params})
    return out


def build_optimizer(name: str, param_groups: list[dict], lr: float, weight_decay: float, kwargs: dict):
    cls = OPTIMIZERS[name]
    kwargs = dict(kwargs)
    if name in ("adam", "adamw") and "foreach" not in kwargs and "fused" not in kwargs:
        # one kernel over all tensors (CUDA and CPU), which also skips a step on the device when
        # the non-finite guard sets found_inf (solo_ext/utils/nonfinite.py)
        kwargs["fused"] = True
    return cls(param_groups, lr=lr, weight_decay=weight_decay, **kwargs)


def warmup_cosine(
    step: float, warmup_steps: float, total_steps: float, base: float, start: float, end: float
):
    """lr at ``step``: linear from ``start`` to ``base`` over ``warmup_steps``, then half-cosine to
    ``end`` at ``total_steps`` (and ``end`` afterwards). Pure; returns a float."""
    if step < warmup_steps:
        return start + (base - start) * step / warmup_steps
    if total_steps <= warmup_steps:
        return base
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return end + (base - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lightning_lr_schedule(
    optimizer: torch.optim.Optimizer,
    module,
    shared_base_lr: float | None = None,
):
    """What a LightningModule's ``configure_optimizers`` returns for ``module.cfg.scheduler`` (per
    step or per epoch, the warm-up given in epochs), with the scaled lrs of ``cfg.derived``. The
    trainer is asked for the number of steps only for a per-step schedule.

    ``warmup_cosine``: per group from ``warmup_start_lr`` to the group's lr, then to ``min_lr``
    (solo-learn's LinearWarmupCosineAnnealingLR as a stateless LambdaLR); with ``shared_base_lr``
    every group follows that lr's schedule scaled by its own lr / shared_base_lr (MAE's lr_sched,
    which keeps layer-wise lr ratios through warmup and decay); ``step``: x0.1 at each of
    ``lr_decay_steps``; ``none``: no scheduler."""
    cfg = module.cfg
    sched_cfg, derived = cfg.scheduler, cfg.derived
    if sched_cfg.name == "none":
        return optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if sched_cfg.name == "step":
        milestones = list(sched_cfg.lr_decay_steps or [])
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    else:
        per_step = sched_cfg.interval == "step"
        total = module.trainer.estimated_stepping_batches if per_step else cfg.max_epochs
        warmup = sched_cfg.warmup_epochs * (total / cfg.max_epochs if per_step else 1)

        def factor(base: float):
            return lambda step: (
                warmup_cosine(step, warmup, total, base, derived.warmup_start_lr, derived.min_lr) / base
            )

        bases = [shared_base_lr] if shared_base_lr is not None else [g["lr"] for g in optimizer.param_groups]
        lambdas = [factor(base) for base in bases]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas[0] if len(bases) == 1 else lambdas)
    interval = sched_cfg.interval if sched_cfg.name == "warmup_cosine" else "epoch"
    return [optimizer], [{"scheduler": scheduler, "interval": interval, "frequency": 1}]
