"""What a LightningModule measures while it trains, in one component shared by the pretraining
methods (their online probe) and the linear-evaluation model.

- the probe's validation loss, acc@1 and acc@5 (torchmetrics, synced over processes);
- the weighted kNN: its bank is the training batches' features (``bank: batches``, solo-learn's)
  or the training set through the val transform (``bank: clean``, the second val loader). The
  ``batches`` bank holds at most one epoch: it is emptied when a training epoch starts and
  filled only in an epoch that a validation follows (``check_val_every_n_epoch``), and with
  ``max_bank`` it keeps a uniform sample of that epoch's rows (each row draws a uniform key from
  the bank's own generator, the ``max_bank`` smallest keys stay: sampling without replacement,
  on the device, without touching the training's random streams);
- the effective rank (and singular values) of a bounded, equal-sized sample of val features per
  process, gathered over processes.

Metric states are not persistent, so checkpoint keys do not depend on this component.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from solo_ext.eval.diagnostics import effective_rank, singular_values
from solo_ext.eval.knn import WeightedKNNClassifier


class OnlineEvaluation(nn.Module):
    """Args:
    knn: the ``knn_eval`` section (enabled, k, T, distance_func, bank).
    num_classes: classes of the labelled val set (None or 0: no kNN).
    max_samples: features kept for the effective rank, over all processes (None: none kept).
    """

    def __init__(self, knn: Mapping, num_classes: int | None, max_samples: int | None) -> None:
        super().__init__()
        self.loss, self.acc1, self.acc5 = MeanMetric(), MeanMetric(), MeanMetric()
        self.knn_bank = knn.get("bank", "batches")
        self.knn = (
            WeightedKNNClassifier(
                k=knn["k"], T=knn["T"], distance_fx=knn["distance_func"], num_classes=num_classes
            )
            if knn["enabled"] and num_classes
            else None
        )
        self.max_bank = knn.get("max_bank")
        self._fill_bank = True
        self._bank_seed = 0
        self._generator: torch.Generator | None = None
        # the max_bank sample so far: features, targets and their keys
        self._sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.max_samples = max_samples
        self._features: list[torch.Tensor] = []
        self._count = 0
        self.last_singular_values: torch.Tensor | None = None

    def start_train_epoch(self, trainer, seed: int) -> None:
        """Before a training epoch (``bank: batches``): empty the bank and fill it in this epoch
        only if a validation follows it; ``seed`` seeds the ``max_bank`` sample."""
        if self.knn is None or self.knn_bank != "batches":
            return
        every = trainer.check_val_every_n_epoch
        self._fill_bank = every is None or (trainer.current_epoch + 1) % every == 0
        self.knn.reset()  # nothing of the test bank is lost: a validation ends with a reset
        self._sample, self._generator, self._bank_seed = None, None, seed

    def bank_batch(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Training features for the kNN bank (``bank: batches``)."""
        if self.knn is None or self.knn_bank != "batches" or not self._fill_bank:
            return
        if self.max_bank is None:
            self.knn.update(train_features=feats, train_targets=targets)
            return
        if self._generator is None:
            self._generator = torch.Generator(device=feats.device).manual_seed(self._bank_seed)
        keys = torch.rand(feats.shape[0], generator=self._generator, device=feats.device)
        feats, targets = feats.detach(), targets.detach()
        if self._sample is not None:
            feats, targets, keys = (torch.cat(pair) for pair in zip(self._sample, (feats, targets, keys)))
        if keys.shape[0] > self.max_bank:
            keep = keys.topk(self.max_bank, largest=False).indices
            feats, targets, keys = feats[keep], targets[keep], keys[keep]
        self._sample = (feats.clone(), targets.clone(), keys)

    def bank_clean(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Features of the training set through the val transform (``bank: clean``)."""
        if self.knn is not None:
            self.knn.update(train_features=feats, train_targets=targets)

    def probe(self, loss: torch.Tensor, acc1: torch.Tensor, acc5: torch.Tensor, n: int) -> None:
        for metric, value in ((self.loss, loss), (self.acc1, acc1), (self.acc5, acc5)):
            metric.update(value, weight=n)

    def val_features(self, feats: torch.Tensor, targets: torch.Tensor, world_size: int) -> None:
        """Val features: the kNN's queries, and the rank sample (the val sampler gives every rank
        the same number of batches, so the cross-process gather sees equal shapes)."""
        if self.knn is not None:
            self.knn.update(test_features=feats, test_targets=targets)
        if self.max_samples is None:
            return
        take = min(self.max_samples // world_size - self._count, feats.size(0))
        if take > 0:
            self._features.append(feats[:take].detach().float())
            self._count += take

    def reset(self) -> None:
        for metric in (self.loss, self.acc1, self.acc5):
            metric.reset()
        if self.knn is not None:
            self.knn.reset()
        self._features, self._count = [], 0

    def end_epoch(self, module) -> None:
        """At a LightningModule's validation epoch end: log the epoch's values (nothing after the
        sanity check, whose batches only reset the state)."""
        if module.trainer.sanity_checking:
            self.reset()
            return
        logs = self.compute(module.all_gather, module.trainer.world_size)
        if logs:
            # already global: torchmetrics and all_gather synced them
            module.log_dict({k: float(v) for k, v in logs.items()}, sync_dist=False)

    def compute(self, all_gather: Callable[[torch.Tensor], torch.Tensor], world_size: int) -> dict:
        """The epoch's values under their logged names (already global), then a reset."""
        logs: dict[str, Any] = {}
        if self._sample is not None:
            assert self.knn is not None  # a sample is kept for the kNN bank only
            self.knn.update(train_features=self._sample[0], train_targets=self._sample[1])
            self._sample = None
        if self.knn is not None and isinstance(self.knn.train_features, list):
            # this process's bank before the gather (shapes only: no host synchronisation)
            logs["knn_bank_rows"] = float(sum(t.shape[0] for t in self.knn.train_features))
        if self.loss.update_count > 0:
            logs.update(
                val_loss=self.loss.compute(), val_acc1=self.acc1.compute(), val_acc5=self.acc5.compute()
            )
        if self.knn is not None:
            result = self.knn.compute()
            if result is not None:
                logs.update(val_knn_acc1=result[0], val_knn_acc5=result[1])
        if self._features:
            feats = torch.cat(self._features)
            if world_size > 1:
                feats = all_gather(feats).flatten(0, 1)
            self.last_singular_values = singular_values(feats)
            logs["val_effective_rank"] = effective_rank(feats)
        self.reset()
        return logs


def bank_size(
    knn: Mapping,
    batches_per_epoch: int,
    batch_size: int,
    crops: int,
    world_size: int,
    dim: int,
    precision: str,
) -> dict | None:
    """What the ``bank: batches`` kNN bank holds at most per process, known before the run: rows
    (one epoch of ``batches_per_epoch`` steps of ``batch_size`` x ``crops`` features, split over
    ``world_size`` processes, or ``max_bank``) and bytes (features at the precision's width plus
    int64 labels); after the cross-process gather of ``compute`` each process holds
    ``world_size`` times as much. None where there is no such bank."""
    if not knn["enabled"] or knn.get("bank", "batches") != "batches":
        return None
    rows = math.ceil(batches_per_epoch / world_size) * batch_size * crops
    if knn.get("max_bank") is not None:
        rows = min(rows, knn["max_bank"])
    width = 2 if precision.startswith(("16", "bf16")) else 4
    per_process = rows * (dim * width + 8)
    return {"rows": rows, "bytes": per_process, "bytes_gathered": per_process * world_size}
