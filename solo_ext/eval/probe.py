"""An offline probe of frozen features: a grid of linear heads trained together on cached features.

The features of the training and val sets are extracted once (see :mod:`solo_ext.run.probe`);
everything here works on those tensors. Every setting of the grid (learning rate x weight decay x
BatchNorm or not) is one head of a single batched model (weights ``(H, D, C)``), so one pass over
the cached features trains them all. The setting is chosen on a held-out part of the training
set, never on val; the chosen setting is then trained again on the whole training set and scored
on val once.

A head "with BatchNorm" is MAE's affine-free BatchNorm1d before the linear layer (He et al. 2022,
appendix A.2) at its evaluation-time limit: the features standardised with the mean and variance
of the features it is trained on. On cached features those statistics are known exactly, so the
running averages a BatchNorm layer would estimate are not needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

# BatchNorm1d's eps in MAE's probe head
BN_EPS = 1e-6


@dataclass(frozen=True)
class HeadSetting:
    """One head of the grid: SGD learning rate, L2 weight decay (biases exempt), BatchNorm or not."""

    lr: float
    weight_decay: float
    batchnorm: bool

    def describe(self) -> str:
        norm = "BatchNorm" if self.batchnorm else "no BatchNorm"
        return f"lr {self.lr:g}, weight decay {self.weight_decay:g}, {norm}"


def head_grid(
    lrs: Sequence[float], weight_decays: Sequence[float], batchnorm: Sequence[bool]
) -> list[HeadSetting]:
    """Every combination, duplicates dropped, in the order given (BatchNorm outermost)."""
    settings = [HeadSetting(lr, wd, bn) for bn in batchnorm for lr in lrs for wd in weight_decays]
    return list(dict.fromkeys(settings))


def holdout_split(targets: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fit indices, held-out indices) of ``targets`` (N,): per class, ``round(fraction x count)``
    of its samples are held out (at least one for a class with two or more, none for a class of
    one), drawn with a generator seeded by ``seed``; both index tensors sorted."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    labels = targets.cpu()
    held = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        count = len(members)
        take = 0 if count < 2 else min(count - 1, max(1, round(fraction * count)))
        held.append(members[torch.randperm(count, generator=generator)[:take]])
    held_out = torch.sort(torch.cat(held)).values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return torch.nonzero(keep).flatten(), held_out


def standardizer(features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (D,), 1 / std (D,)) of ``features`` (N, D): the affine-free BatchNorm's transform
    with the biased variance and eps of MAE's probe."""
    mean = features.mean(0)
    var = features.var(0, unbiased=False)
    return mean, torch.rsqrt(var + BN_EPS)


@dataclass
class HeadGrid:
    """H linear heads on D-dimensional features for C classes, trained together.

    ``weight`` (H, D, C), ``bias`` (H, C); heads whose ``batchnorm`` flag (H,) is set read the
    features standardised by ``mean`` (D,) and ``inv_std`` (D,), the others read them as they are.
    """

    settings: list[HeadSetting]
    weight: Tensor
    bias: Tensor
    mean: Tensor
    inv_std: Tensor

    @property
    def batchnorm(self) -> Tensor:
        return torch.tensor([s.batchnorm for s in self.settings], device=self.weight.device)

    def inputs(self, features: Tensor) -> Tensor:
        """(N, D) features -> (H, N, D): each head's input (standardised or raw)."""
        standard = (features - self.mean) * self.inv_std
        return torch.where(self.batchnorm[:, None, None], standard[None], features[None])

    def logits(self, features: Tensor) -> Tensor:
        """(N, D) features -> (H, N, C) logits."""
        return torch.einsum("hnd,hdc->hnc", self.inputs(features), self.weight) + self.bias[:, None, :]

    def head(self, index: int) -> HeadGrid:
        """The grid of one head, the ``index``-th."""
        return HeadGrid(
            [self.settings[index]],
            self.weight[index : index + 1],
            self.bias[index : index + 1],
            self.mean,
            self.inv_std,
        )

    def state_dict(self) -> dict:
        return {
            "settings": [asdict(s) for s in self.settings],
            "weight": self.weight.cpu(),
            "bias": self.bias.cpu(),
            "mean": self.mean.cpu(),
            "inv_std": self.inv_std.cpu(),
        }


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """Cosine decay from 1 at step 0 to 0 after ``total_steps`` steps."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"step {step} outside [0, {total_steps}]")
    return 0.5 * (1 + math.cos(math.pi * step / total_steps))


def train_heads(
    features: Tensor,
    targets: Tensor,
    settings: Sequence[HeadSetting],
    num_classes: int,
    *,
    epochs: int,
    batch_size: int,
    momentum: float,
    seed: int,
    after_epoch: Callable[[int, HeadGrid], None] | None = None,
) -> HeadGrid:
    """Train one head per setting with SGD (momentum, cosine-decayed lr, no warm-up) on the
    cross-entropy of shuffled mini-batches of ``features`` (N, D) and ``targets`` (N,).

    The heads start at zero (the problem is convex, so no initialisation is favoured) and share
    the mini-batches; the summed loss gives each head the gradient of its own loss, to which its
    L2 weight decay (``weight_decay x W``, biases exempt) is added. A head whose weights stop being
    finite is left as it is (its held-out accuracy then ranks it last). ``after_epoch(e, grid)``,
    when given, is called after each epoch ``e`` (1-based) with the heads as they are then.
    """
    device = features.device
    features = features.float()
    count, dim = features.shape
    heads = len(settings)
    mean, inv_std = standardizer(features)
    grid = HeadGrid(
        list(settings),
        torch.zeros(heads, dim, num_classes, device=device),
        torch.zeros(heads, num_classes, device=device),
        mean,
        inv_std,
    )
    lrs = torch.tensor([s.lr for s in settings], device=device)
    decays = torch.tensor([s.weight_decay for s in settings], device=device)
    velocity_w, velocity_b = torch.zeros_like(grid.weight), torch.zeros_like(grid.bias)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(count / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(count, generator=generator).to(device)
        for start in range(0, count, batch_size):
            idx = order[start : start + batch_size]
            weight = grid.weight.detach().requires_grad_(True)
            bias = grid.bias.detach().requires_grad_(True)
            inputs = grid.inputs(features[idx])
            logits = torch.einsum("hnd,hdc->hnc", inputs, weight) + bias[:, None, :]
            # sum over heads of each head's mean loss: head h's gradient is that of its own loss
            loss = F.cross_entropy(logits.flatten(0, 1), targets[idx].repeat(heads), reduction="sum") / len(
                idx
            )
            grad_w, grad_b = torch.autograd.grad(loss, (weight, bias))
            with torch.no_grad():
                grad_w = grad_w + decays[:, None, None] * grid.weight
                velocity_w.mul_(momentum).add_(grad_w)
                velocity_b.mul_(momentum).add_(grad_b)
                rate = lrs * cosine_lr_factor(step, total)
                grid.weight = grid.weight - rate[:, None, None] * velocity_w
                grid.bias = grid.bias - rate[:, None] * velocity_b
            step += 1
        if after_epoch is not None:
            after_epoch(epoch, grid)
    return grid


def curve_epochs(epochs: int) -> list[int]:
    """The epochs at which the probe curve is read: 1, 2, 5, 10, 20, 50, ... below ``epochs``, and
    ``epochs`` itself."""
    marks = [m * 10**e for e in range(len(str(epochs))) for m in (1, 2, 5)]
    return sorted({m for m in marks if m < epochs} | {epochs})


@torch.no_grad()
def head_accuracies(grid: HeadGrid, features: Tensor, targets: Tensor, top: int = 1) -> Tensor:
    """(H,) top-``top`` accuracy in percent of each head; a head with non-finite logits scores -inf."""
    logits = grid.logits(features.float())
    finite = torch.isfinite(logits).flatten(1).all(1)
    k = min(top, logits.shape[-1])
    hits = (logits.topk(k, dim=-1).indices == targets[None, :, None]).any(-1).float().mean(1) * 100
    return torch.where(finite, hits, torch.full_like(hits, -math.inf))


@dataclass
class ProbeOutcome:
    """What :func:`probe` found: the chosen setting, every setting's held-out accuracy, and the
    chosen setting's head, refit on the whole training set, scored on val."""

    chosen: HeadSetting
    settings: list[HeadSetting]  # the whole grid, in order
    holdout_acc1: list[float]  # of each setting, in that order
    val_acc1: float
    val_acc5: float
    val_loss: float
    head: HeadGrid
    # the chosen setting's held-out acc1 after each epoch of :func:`curve_epochs` of the grid's fit
    # (the probe curve: has the chosen head converged by the last epoch?)
    curve: list[tuple[int, float]]

    def table(self) -> list[dict]:
        """One row per setting: lr, weight_decay, batchnorm, holdout_acc1."""
        return [{**asdict(s), "holdout_acc1": a} for s, a in zip(self.settings, self.holdout_acc1)]


class TrainOptions(TypedDict):
    """The keyword arguments of :func:`train_heads` that :func:`probe` passes through."""

    epochs: int
    batch_size: int
    momentum: float
    seed: int


def probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    settings: Sequence[HeadSetting],
    num_classes: int,
    *,
    holdout_fraction: float,
    epochs: int,
    batch_size: int,
    momentum: float,
    seed: int,
    train_views: Tensor | None = None,
) -> ProbeOutcome:
    """Choose a setting on held-out training images, refit it on all of them, score it on val.

    Args:
        train: clean training features (N, D) and labels (N,).
        val: val features (M, D) and labels (M,); read only to score the refit chosen head.
        settings: the grid (:func:`head_grid`).
        num_classes: C.
        holdout_fraction: the share of each class of the training set held out to choose the setting.
        epochs, batch_size, momentum, seed: of :func:`train_heads` (the seed also draws the held-out part).
        train_views: optional (V, N, D) features of V augmented views of the training images; the
            heads then train on these views (those of held-out images excluded), and the held-out
            images are still scored on their clean features.

    Ties between settings go to the first in grid order.
    """
    features, targets = train
    fit_idx, held_idx = holdout_split(targets, holdout_fraction, seed)
    options: TrainOptions = {"epochs": epochs, "batch_size": batch_size, "momentum": momentum, "seed": seed}

    def fit_set(idx: Tensor) -> tuple[Tensor, Tensor]:
        if train_views is None:
            return features[idx], targets[idx]
        views = train_views[:, idx.to(train_views.device)]
        return views.flatten(0, 1), targets[idx].repeat(len(train_views))

    marks = set(curve_epochs(epochs))
    readings: dict[int, Tensor] = {}

    def read_holdout(epoch: int, heads: HeadGrid) -> None:
        if epoch in marks:
            readings[epoch] = head_accuracies(heads, features[held_idx], targets[held_idx])

    train_heads(*fit_set(fit_idx), settings, num_classes, after_epoch=read_holdout, **options)
    holdout = readings[epochs]
    best = int(torch.argmax(holdout))  # the first of equal maxima
    chosen = settings[best]
    head = train_heads(*fit_set(torch.arange(len(targets))), [chosen], num_classes, **options)
    val_features, val_targets = val
    with torch.no_grad():
        logits = head.logits(val_features.float())[0]
        loss = float(F.cross_entropy(logits, val_targets))
    return ProbeOutcome(
        chosen=chosen,
        settings=list(settings),
        holdout_acc1=[float(a) for a in holdout],
        val_acc1=float(head_accuracies(head, val_features, val_targets, top=1)[0]),
        val_acc5=float(head_accuracies(head, val_features, val_targets, top=5)[0]),
        val_loss=loss,
        head=head,
        curve=[(epoch, float(acc[best])) for epoch, acc in sorted(readings.items())],
    )
