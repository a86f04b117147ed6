"""LinearModel: a pretrained ViT evaluated offline by linear probing, partial or full fine-tuning.

The three protocols of MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR
2022, Sec. 4 and Fig. 9), chosen by ``mode``:

- ``linear``: the backbone is frozen and kept in eval mode (no dropout or drop-path; a ViT has
  no BatchNorm), features are computed without autograd, only the head trains; optionally
  behind BatchNorm1d without affine parameters, MAE's linear-probe head.
- ``partial``: the last ``partial_blocks`` blocks and the final norm train, the rest is frozen
  and in eval mode; ``partial_blocks=0.5`` trains only the MLP sub-block (norm2, mlp) of the
  last block.
- ``finetune``: everything trains, the positional embedding included (as in MAE's fine-tuning,
  where it is a learnable parameter initialised from the fixed sin-cos table), with layer-wise
  lr decay (BEiT, Bao et al. 2022; MAE's fine-tuning recipe) when ``optimizer.layer_decay > 0``.

Training may mix samples with timm's Mixup/CutMix (soft targets, ``SoftTargetCrossEntropy``) or
smooth labels (``LabelSmoothingCrossEntropy``). Validation is plain cross-entropy on the val set.
Logged keys (solo-learn's): ``train_loss``, ``train_acc1``/``train_acc5`` (not under mixup,
whose targets are not single labels), ``val_loss``, ``val_acc1``, ``val_acc5``, plus
``val_effective_rank`` of the features fed to the head and, with ``knn_eval``,
``val_knn_acc1``/``val_knn_acc5``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from solo_ext.backbones.vit import MaskedViT
from solo_ext.data.info import dataset_mean_std
from solo_ext.data.tensor_pipeline import normalize_images
from solo_ext.eval.online import OnlineEvaluation
from solo_ext.methods.base import KNN_TRAIN_SET, VAL_SET, accuracy_at_k
from solo_ext.methods.guarded import GuardedModule
from solo_ext.optim.factory import build_optimizer, build_param_groups, lightning_lr_schedule
from solo_ext.utils.nonfinite import NonFiniteGuard
from solo_ext.utils.seeds import epoch_seed


def trainable_modules(backbone: MaskedViT, mode: str, partial_blocks: float | None = None) -> list[nn.Module]:
    """The parts of ``backbone`` that train in ``mode``; everything else is frozen.

    Args:
        backbone: the ViT.
        mode: ``linear`` (none), ``partial`` or ``finetune`` (the whole backbone).
        partial_blocks: for ``partial``, the number of last blocks to train with the final norm,
            or 0.5 for the MLP sub-block of the last block (its norm2 and mlp) and the final norm.
    """
    # the mode is a literal and partial_blocks 0.5 or in [1, depth], declared by the linear config
    # (LinearConfig); an unknown mode is a KeyError naming it
    last: Any = backbone.blocks[-1]  # a timm Block
    parts: dict[str, Callable[[], list[nn.Module]]] = {
        "linear": lambda: [],
        "finetune": lambda: [backbone],
        # timm Block: x + drop_path1(ls1(attn(norm1(x)))), then x + drop_path2(ls2(mlp(norm2(x))))
        "partial": lambda: (
            [last.norm2, last.mlp, last.ls2, last.drop_path2, backbone.norm]
            if partial_blocks == 0.5
            # otherwise an integer in [1, depth] (LinearConfig)
            else [*backbone.blocks[-cast(int, partial_blocks) :], backbone.norm]
        ),
    }
    return parts[mode]()


def vit_layer_id(name: str, depth: int) -> int:
    """Layer of a ViT parameter for layer-wise lr decay: 0 for ``patch_embed.*``, ``cls_token``
    and ``pos_embed``, i + 1 for ``blocks.<i>.*``, depth + 1 for the final norm (and the head)."""
    # Ours, not timm's param_groups_layer_decay: timm's ViT group_matcher puts the final norm and
    # the head in the last block's layer (full lr for that block), MAE's lr_decay.py one layer
    # above it (the block at layer_decay x lr); tests/methods/test_linear_model.py shows both.
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_scales(depth: int, layer_decay: float) -> list[float]:
    """lr multiplier of each layer id 0 .. depth + 1: ``layer_decay ** (depth + 1 - id)``, so the
    head trains at the full lr and the patch embedding at ``layer_decay ** (depth + 1)``."""
    return [layer_decay ** (depth + 1 - layer) for layer in range(depth + 2)]


class LinearModel(GuardedModule):
    """A backbone and a classification head, trained as ``cfg.mode`` says (module docstring).

    Args:
        backbone: the ViT, pretrained weights already loaded.
        cfg: a config from :func:`solo_ext.config.linear.parse_cfg`.
    """

    # the dataset's normalisation statistics (registered in __init__)
    image_mean: torch.Tensor
    image_std: torch.Tensor

    def __init__(self, backbone: MaskedViT, cfg: DictConfig):
        super().__init__()
        self.cfg = cfg
        self.mode = cfg.mode
        self.features = cfg.features
        self.num_classes = cfg.data.num_classes
        self.backbone = backbone
        self._trainable = trainable_modules(backbone, cfg.mode, cfg.partial_blocks)
        backbone.requires_grad_(False)
        for module in self._trainable:
            module.requires_grad_(True)

        dim = backbone.num_features
        head = nn.Linear(dim, self.num_classes)
        # MAE's head initialisations: std 0.01 for the probe, 2e-5 when fine-tuning, where the
        # head starts near zero so the pretrained features are not disturbed by large gradients.
        trunc_normal_(head.weight, std=2e-5 if cfg.mode == "finetune" else 0.01)
        nn.init.zeros_(head.bias)
        self.classifier = (
            nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), head) if cfg.batchnorm_head else head
        )

        self.mixup = None
        self.loss_func: nn.Module
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                label_smoothing=cfg.label_smoothing,
                num_classes=self.num_classes,
            )
            self.loss_func = SoftTargetCrossEntropy()
        elif cfg.label_smoothing > 0:
            self.loss_func = LabelSmoothingCrossEntropy(cfg.label_smoothing)
        else:
            self.loss_func = nn.CrossEntropyLoss()

        # as in BaseMethod: val metrics, kNN (bank: batches or clean) and effective rank
        self.online = OnlineEvaluation(
            cfg.knn_eval, self.num_classes, cfg.diagnostics.max_samples if cfg.diagnostics.enabled else None
        )
        self.guard = NonFiniteGuard()
        # uint8 batches of the tensor and DALI back-ends are normalised on the device with the
        # dataset's statistics (those of prepare_transforms); not persistent, checkpoint keys stay
        mean, std = dataset_mean_std(cfg.data.dataset)
        self.register_buffer("image_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("image_std", torch.tensor(std), persistent=False)

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> LinearModel:
        """Frozen parts of the backbone stay in eval mode whatever Lightning asks, so that a frozen
        block never applies dropout or drop-path."""
        super().train(mode)
        self.backbone.eval()
        for module in self._trainable:
            module.train(mode)
        return self

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """``[x, y]``: a uint8 ``x`` becomes normalised float32 on the device; float ``x`` passes."""
        x, targets = batch
        return [normalize_images(x, self.image_mean, self.image_std), targets]

    # ----------------------------------------------------------------- forward
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, D) features (class token or mean patch token after the final
        norm); without autograd when the backbone is frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode != "linear"):
            tokens = self.backbone.forward_features(x).tokens
            return self.backbone.pool(tokens, self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, num_classes) logits."""
        return self.classifier(self.extract_features(x))

    # ----------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        x, targets = batch
        logs = {}
        if self.mixup is not None:
            x, soft_targets = self.mixup(x, targets)
            loss = self.loss_func(self(x), soft_targets)
        else:
            feats = self.extract_features(x)
            logits = self.classifier(feats)
            loss = self.loss_func(logits, targets)
            acc1, acc5 = accuracy_at_k(logits.detach(), targets)
            logs.update(train_acc1=acc1, train_acc5=acc5)
            self.online.bank_batch(feats, targets)
        logs["train_loss"] = loss.detach()
        self.log_dict(logs, on_step=True, on_epoch=True, sync_dist=True, batch_size=targets.size(0))
        self.guard.observe(loss, logs)
        return loss

    def on_train_start(self):
        self.on_train_epoch_start()  # Lightning skips it for the epoch a run resumes into
        self.resume_mid_epoch(self.cfg.optimizer.batch_size, self.cfg.seed)

    def on_train_epoch_start(self):
        self.online.start_train_epoch(
            self.trainer, epoch_seed(self.cfg.seed, self.current_epoch, self.global_rank)
        )

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx, dataloader_idx: int = VAL_SET):
        x, targets = batch
        feats = self.extract_features(x)
        if dataloader_idx == KNN_TRAIN_SET:
            if not self.trainer.sanity_checking:
                self.online.bank_clean(feats, targets)
            return
        logits = self.classifier(feats)
        acc1, acc5 = accuracy_at_k(logits, targets)
        self.online.probe(F.cross_entropy(logits, targets), acc1, acc5, targets.size(0))
        if not self.trainer.sanity_checking:
            self.online.val_features(feats, targets, self.trainer.world_size)

    def on_validation_epoch_end(self):
        self.online.end_epoch(self)

    # ----------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict]:
        """Named parameter groups: the head, and the backbone's trainable parameters in one group
        or, with layer decay, one group per layer whose ``lr`` is the base lr times
        ``lr_scale`` (the scheduler multiplies every group by the same factor, so the ratios
        hold throughout training)."""
        lr = self.cfg.derived.lr
        head = {"name": "classifier", "named_params": list(self.classifier.named_parameters())}
        decay = self.cfg.optimizer.layer_decay
        if not decay:
            return [{"name": "backbone", "named_params": list(self.backbone.named_parameters())}, head]
        depth = self.backbone.depth
        scales = layer_decay_scales(depth, decay)
        layers: list[list] = [[] for _ in scales]
        for name, param in self.backbone.named_parameters():
            layers[vit_layer_id(name, depth)].append((name, param))
        layers[depth + 1] += head["named_params"]
        return [
            {"name": f"layer_{i}", "named_params": named, "lr": lr * scales[i], "lr_scale": scales[i]}
            for i, named in enumerate(layers)
        ]

    def configure_optimizers(self):
        opt_cfg, derived = self.cfg.optimizer, self.cfg.derived
        groups = build_param_groups(
            self.param_groups(), opt_cfg.exclude_bias_n_norm_wd, set(self.backbone.no_weight_decay())
        )
        optimizer = build_optimizer(
            opt_cfg.name, groups, derived.lr, opt_cfg.weight_decay, OmegaConf.to_container(opt_cfg.kwargs)
        )
        # One schedule for every group (MAE's lr_sched: lr = lr_scale x schedule(step)), so the
        # layer-wise ratios survive warmup and decay; a per-group schedule towards a shared min_lr
        # would not keep them.
        return lightning_lr_schedule(optimizer, self, shared_base_lr=derived.lr)

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        optimizer.zero_grad(set_to_none=True)
