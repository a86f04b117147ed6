"""BaseMethod: backbone, online linear classifier, online kNN, collapse diagnostics, optimizers.

Kept thin on purpose: a method adds its own modules, ``training_forward`` (what one large crop
produces in training) and ``method_loss`` (the self-supervised objective); everything that every
method shares lives here.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from solo_ext.backbones import build_backbone
from solo_ext.data.info import dataset_mean_std
from solo_ext.data.tensor_pipeline import crop_stats, normalize_images
from solo_ext.eval.online import OnlineEvaluation
from solo_ext.methods.guarded import GuardedModule
from solo_ext.optim.factory import build_optimizer, build_param_groups, lightning_lr_schedule
from solo_ext.utils.nonfinite import NonFiniteGuard
from solo_ext.utils.seeds import epoch_seed, seed_epoch

# Validation dataloader indices: 0 is the labelled val set, 1 (when kNN is on) the training set
# seen through the val transform, whose clean features form the kNN bank.
VAL_SET, KNN_TRAIN_SET = 0, 1


def accuracy_at_k(logits: torch.Tensor, targets: torch.Tensor, top_k=(1, 5)) -> list[torch.Tensor]:
    """Top-k accuracy in percent, k capped at the number of classes; stays on the device."""
    maxk = min(max(top_k), logits.size(1))
    pred = logits.topk(maxk, dim=1).indices
    correct = pred.eq(targets.view(-1, 1))
    return [correct[:, : min(k, maxk)].any(dim=1).float().mean() * 100 for k in top_k]


class BaseMethod(GuardedModule, metaclass=ABCMeta):
    # per-crop and val normalisation statistics (_register_image_stats)
    crop_mean: torch.Tensor
    crop_std: torch.Tensor
    val_mean: torch.Tensor
    val_std: torch.Tensor

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        kwargs = cast(dict[str, Any], OmegaConf.to_container(cfg.backbone.kwargs))
        self.backbone = build_backbone(cfg.backbone.name, kwargs)
        self.features_dim = self.backbone.num_features
        self.num_classes = cfg.data.num_classes
        self.num_large_crops = cfg.data.num_large_crops
        self.online_features = cfg.method_kwargs.get("online_features", "cls")

        # The online linear probe sees detached features: it measures the representation while
        # it trains and never shapes it.
        self.classifier = nn.Linear(self.features_dim, self.num_classes) if self.num_classes else None
        # MAE's linear probe puts a BatchNorm without affine parameters before the head: MAE
        # features have a large common component and small spread, which a plain linear head
        # learns slowly. Online, the backbone moves under the probe, so the running statistics
        # follow recent batches (momentum 0.5, about the last two) rather than the default
        # 0.1, which lags the features by tens of steps and mis-centres them at validation.
        use_norm = self.classifier is not None and cfg.method_kwargs.get("online_batchnorm", False)
        self.classifier_norm = (
            nn.BatchNorm1d(self.features_dim, affine=False, momentum=0.5) if use_norm else nn.Identity()
        )
        # the probe's val metrics, the kNN ("batches": the bank is filled in training_step with
        # the features the method sees, solo-learn's protocol; "clean": from the training set
        # through the val transform, validation loader KNN_TRAIN_SET) and the effective rank
        self.online = OnlineEvaluation(
            cfg.knn_eval, self.num_classes, cfg.diagnostics.max_samples if cfg.diagnostics.enabled else None
        )
        self.guard = NonFiniteGuard()
        self._register_image_stats(cfg)
        self._compiled = False

    def _register_image_stats(self, cfg: DictConfig) -> None:
        # Loaders of image folders hand over uint8 images, normalised here on the device
        # (on_after_batch_transfer): per crop with its pipeline's mean/std, val images with the
        # first pipeline's (as the val transform of the PIL back-end). Not persistent: they follow
        # from the config, and checkpoints keep their keys.
        stats = crop_stats(cfg.data.dataset, cfg.augmentations)
        val_mean, val_std = dataset_mean_std(cfg.data.dataset, cfg.augmentations[0])
        self.register_buffer("crop_mean", torch.tensor([m for m, _ in stats]), persistent=False)
        self.register_buffer("crop_std", torch.tensor([s for _, s in stats]), persistent=False)
        self.register_buffer("val_mean", torch.tensor(val_mean), persistent=False)
        self.register_buffer("val_std", torch.tensor(val_std), persistent=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 images (tensor and DALI back-ends) -> normalised float32, on the device; float
        batches (PIL back-end: CIFAR, STL-10, digits) pass unchanged. Pretraining batches are
        ``[indexes, [crops], targets]``, evaluation batches ``[x, y]``."""
        if len(batch) == 3:
            indexes, crops, targets = batch
            if isinstance(crops, torch.Tensor):
                crops = [crops]
            crops = [normalize_images(x, self.crop_mean[i], self.crop_std[i]) for i, x in enumerate(crops)]
            return [indexes, crops, targets]
        x, targets = batch
        return [self.normalize_val_images(x), targets]

    def normalize_val_images(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation images as the val transform of the PIL back-end gives them (uint8 -> float)."""
        return normalize_images(x, self.val_mean, self.val_std)

    def on_fit_start(self) -> None:
        # here rather than in __init__: subclasses' modules exist, and the model is on its device
        if self.cfg.get("compile", False) and not self._compiled:
            self.compile_modules()
            self._compiled = True

    def compile_modules(self) -> None:
        """torch.compile what the step runs: the encoder's ``forward_features`` (called directly,
        so compiled as a method; Module.compile would only cover ``forward``). The compiled
        function is an attribute, not a submodule, so state-dict keys stay as they are."""
        self.backbone.forward_features = torch.compile(self.backbone.forward_features)  # type: ignore[method-assign]  # compiled in place on purpose

    # ----------------------------------------------------------------- features
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, D) of full, unmasked images: the cls token, or the mean patch token."""
        tokens = self.backbone.forward_features(x).tokens
        return self.backbone.pool(tokens, self.online_features)

    @abstractmethod
    def training_forward(self, x: torch.Tensor, indexes: torch.Tensor, crop: int) -> dict[str, Any]:
        """What large crop number ``crop`` of the samples ``indexes`` produces in training; must
        hold ``feats`` (N, D)."""

    @abstractmethod
    def method_loss(self, crops: list[torch.Tensor], outs: list[dict]) -> tuple[torch.Tensor, dict]:
        """The self-supervised loss of the large crops and the values to log."""

    # ----------------------------------------------------------------- training
    def online_classifier_loss(self, feats: torch.Tensor, targets: torch.Tensor):
        if self.classifier is None:
            zero = feats.new_zeros(())
            return zero, zero, zero
        logits = self.classifier(self.classifier_norm(feats.detach()))
        loss = F.cross_entropy(logits, targets, ignore_index=-1)
        acc1, acc5 = accuracy_at_k(logits, targets)
        return loss, acc1, acc5

    def training_step(self, batch, batch_idx):
        indexes, crops, targets = batch
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        crops = crops[: self.num_large_crops]
        outs = [self.training_forward(x, indexes, crop) for crop, x in enumerate(crops)]
        class_terms = [self.online_classifier_loss(out["feats"], targets) for out in outs]
        class_loss, acc1, acc5 = (torch.stack(t).mean() for t in zip(*class_terms))
        loss, logs = self.method_loss(crops, outs)
        if self.classifier is not None:
            logs.update(train_class_loss=class_loss, train_acc1=acc1, train_acc5=acc5)
        self.online.bank_batch(torch.cat([out["feats"] for out in outs]), targets.repeat(len(outs)))
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=targets.size(0))
        total = loss + class_loss
        self.guard.observe(total, logs)
        return total

    def seed_epoch(self) -> None:
        """Every random draw of an epoch (masks, crops, shuffling, drop-path) follows from (seed,
        epoch, rank): a run resumed from an epoch's checkpoint repeats exactly what the
        uninterrupted run would have done (with ``data.num_workers: 0``; workers keep their own
        RNG streams), and ranks draw differently from each other."""
        seed_epoch(self.cfg.seed, self.current_epoch, self.global_rank)
        generator = getattr(getattr(self.trainer.train_dataloader, "sampler", None), "generator", None)
        if generator is not None:
            generator.manual_seed(epoch_seed(self.cfg.seed, self.current_epoch, self.global_rank))

    def start_epoch(self) -> None:
        self.seed_epoch()
        self.online.start_train_epoch(
            self.trainer, epoch_seed(self.cfg.seed, self.current_epoch, self.global_rank)
        )

    def on_train_epoch_start(self):
        self.start_epoch()

    def on_train_start(self):
        # Lightning skips on_train_epoch_start for the epoch a run resumes into (from an epoch's
        # end or from its middle), so start here as well (idempotent), then continue inside it
        self.start_epoch()
        self.resume_mid_epoch(self.cfg.optimizer.batch_size, self.cfg.seed)

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx, dataloader_idx: int = VAL_SET):
        x, targets = batch
        feats = self(x)
        if dataloader_idx == KNN_TRAIN_SET:
            if not self.trainer.sanity_checking:
                self.online.bank_clean(feats, targets)
            return
        if self.classifier is not None:
            logits = self.classifier(self.classifier_norm(feats))
            loss = F.cross_entropy(logits, targets, ignore_index=-1)
            acc1, acc5 = accuracy_at_k(logits, targets)
            self.online.probe(loss, acc1, acc5, targets.size(0))
        if not self.trainer.sanity_checking:
            self.online.val_features(feats, targets, self.trainer.world_size)

    @property
    def last_singular_values(self) -> torch.Tensor | None:
        """Singular values of the last validation's feature sample (for the spectrum picture)."""
        return self.online.last_singular_values

    def on_validation_epoch_end(self):
        self.online.end_epoch(self)
        if self.trainer.sanity_checking:
            return
        if self.cfg.method_kwargs.get("reset_classifier") and (self.current_epoch + 1) % 10 == 0:
            # MAGMA's option: re-initialise the online probe every 10 epochs so its accuracy
            # tracks the current representation rather than its own history.
            self.classifier.reset_parameters()
            if isinstance(self.classifier_norm, nn.BatchNorm1d):
                self.classifier_norm.reset_running_stats()

    # ----------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict]:
        """Named parameter groups (solo-learn's ``learnable_params``); methods append theirs."""
        derived = self.cfg.derived
        groups: list[dict[str, Any]] = [
            {"name": "backbone", "named_params": list(self.backbone.named_parameters())}
        ]
        if self.classifier is not None:
            groups.append(
                {
                    "name": "classifier",
                    "named_params": list(self.classifier.named_parameters()),
                    "lr": derived.classifier_lr,
                    "weight_decay": 0.0,
                }
            )
        return groups

    def no_weight_decay_names(self) -> set[str]:
        # MAE's pretraining optimizer (timm's param_groups_weight_decay without a skip list)
        # exempts only 1-D parameters and biases: the cls and mask tokens (1, 1, D) decay. The
        # positional embeddings are fixed sin-cos buffers of no concern here.
        return set()

    def configure_optimizers(self):
        opt_cfg, derived = self.cfg.optimizer, self.cfg.derived
        groups = build_param_groups(
            self.param_groups(), opt_cfg.exclude_bias_n_norm_wd, self.no_weight_decay_names()
        )
        for group in groups:
            group.setdefault("lr", derived.lr)
        optimizer = build_optimizer(
            opt_cfg.name, groups, derived.lr, opt_cfg.weight_decay, OmegaConf.to_container(opt_cfg.kwargs)
        )
        return lightning_lr_schedule(optimizer, self)

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        optimizer.zero_grad(set_to_none=True)
