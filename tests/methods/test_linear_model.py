"""LinearModel: what trains in each mode, eval mode of frozen parts, layer-wise lr decay, and real
fits (linear, partial, finetune, mixup, random backbone) on the digits with a tiny ViT."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from timm.loss import SoftTargetCrossEntropy

from solo_ext.backbones import build_backbone
from solo_ext.backbones.loading import extract_backbone_state_dict, read_checkpoint
from solo_ext.config.linear import parse_cfg
from solo_ext.config.pretrain import parse_cfg as parse_pretrain_cfg
from solo_ext.methods import METHODS
from solo_ext.methods.linear import LinearModel, layer_decay_scales, trainable_modules, vit_layer_id
from solo_ext.run.checkpointer import Checkpointer
from solo_ext.run.linear import build_linear_loaders, run_linear
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.tiny import tiny_cfg

DEPTH = 2
TINY_BACKBONE = {
    "name": "vit_tiny",
    "kwargs": {"img_size": 32, "patch_size": 8, "depth": DEPTH, "embed_dim": 32, "num_heads": 2},
}


def save_tiny_pretrained(root: Path) -> Path:
    """A tiny MAE's run folder as main_pretrain.py writes it: args.json and a Lightning checkpoint
    (``state_dict`` with backbone.*, decoder.*, classifier.* keys). Returns the checkpoint."""
    cfg = parse_pretrain_cfg(tiny_cfg(root, method="mae", knn_eval={"enabled": False}))
    torch.manual_seed(0)
    model = METHODS["mae"](cfg)
    run_dir = root / "trained_models" / "mae" / "pretrun1"
    Checkpointer(cfg, run_dir, "pretrun1").save_args()
    path = run_dir / "tiny-pretrun1-ep=0.ckpt"
    torch.save({"state_dict": model.state_dict(), "epoch": 0, "global_step": 0}, path)
    return path


def tiny_linear_cfg(pretrained, root: Path, **top) -> dict:
    """A linear-evaluation config on the digits that fits in seconds; ``top`` replaces top-level keys."""
    cfg = {
        "name": "tiny-linear",
        "pretrained_feature_extractor": None if pretrained is None else str(pretrained),
        "data": {"dataset": "digits", "num_workers": 0},
        "optimizer": {"name": "adamw", "batch_size": 16, "lr": 1e-2, "weight_decay": 0.05},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 0},
        "checkpoint": {"enabled": True, "dir": str(root / "trained_models")},
        "wandb": {"enabled": False},
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 2,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    }
    cfg.update(top)
    return cfg


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("pretrain"))


def tiny_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY_BACKBONE["name"], TINY_BACKBONE["kwargs"])


def trainable_names(backbone):
    return {name for name, p in backbone.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------- what trains
@pytest.mark.parametrize(
    "mode, blocks, expected_prefixes",
    [
        ("linear", None, ()),
        ("partial", 0.5, ("blocks.1.norm2.", "blocks.1.mlp.", "norm.")),
        ("partial", 1, ("blocks.1.", "norm.")),
        ("partial", 2, ("blocks.0.", "blocks.1.", "norm.")),
    ],
)
def test_trainable_modules_cover_exactly_the_mode(mode, blocks, expected_prefixes):
    backbone = tiny_backbone()
    backbone.requires_grad_(False)
    for module in trainable_modules(backbone, mode, blocks):
        module.requires_grad_(True)
    expected = {n for n, _ in backbone.named_parameters() if n.startswith(expected_prefixes)}
    assert trainable_names(backbone) == expected
    if blocks == 0.5:
        assert not any(n.startswith("blocks.1.attn.") for n in expected)


def test_finetune_trains_everything_including_the_positional_embedding(tmp_path):
    cfg = parse_cfg(
        tiny_linear_cfg(None, tmp_path, allow_random_backbone=True, backbone=TINY_BACKBONE, mode="finetune")
    )
    model = LinearModel(tiny_backbone(), cfg)
    assert trainable_names(model.backbone) == {n for n, _ in model.backbone.named_parameters()}


def test_frozen_parts_stay_in_eval_mode_when_lightning_calls_train(tmp_path):
    cfg = parse_cfg(
        tiny_linear_cfg(
            None,
            tmp_path,
            allow_random_backbone=True,
            backbone=TINY_BACKBONE,
            mode="partial",
            partial_blocks=0.5,
        )
    )
    model = LinearModel(tiny_backbone(), cfg).train()
    last = model.backbone.blocks[-1]
    assert model.classifier.training
    assert last.mlp.training and last.norm2.training and last.drop_path2.training
    assert not (last.attn.training or last.norm1.training or last.drop_path1.training)
    assert not model.backbone.blocks[0].training and not model.backbone.patch_embed.training
    model.eval()
    assert not last.mlp.training and not model.classifier.training

    linear = LinearModel(
        tiny_backbone(),
        parse_cfg(tiny_linear_cfg(None, tmp_path, allow_random_backbone=True, backbone=TINY_BACKBONE)),
    ).train()
    assert not any(m.training for m in linear.backbone.modules())


def test_linear_mode_features_have_no_graph(tmp_path):
    cfg = parse_cfg(tiny_linear_cfg(None, tmp_path, allow_random_backbone=True, backbone=TINY_BACKBONE))
    model = LinearModel(tiny_backbone(), cfg).train()
    x = torch.randn(4, 3, 32, 32)
    assert not model.extract_features(x).requires_grad
    assert model(x).requires_grad  # the head still trains


# ----------------------------------------------------------------- layer decay
def test_layer_ids_follow_beit_mae():
    assert [vit_layer_id(n, 12) for n in ("cls_token", "pos_embed", "patch_embed.proj.weight")] == [0, 0, 0]
    assert vit_layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert vit_layer_id("blocks.11.mlp.fc2.bias", 12) == 12
    assert vit_layer_id("norm.weight", 12) == 13
    assert layer_decay_scales(2, 0.5) == [0.125, 0.25, 0.5, 1.0]


def test_timm_layer_decay_groups_the_final_norm_with_the_last_block():
    # why solo-ext keeps MAE's layer ids instead of timm's helper: timm's ViT grouping agrees on
    # the stem and the blocks but puts the final norm (and, unmatched, the head) in the last block's
    # layer, so the last block would train at the head's full lr
    from timm.models import VisionTransformer, group_parameters

    from solo_ext.backbones import build_backbone

    backbone = build_backbone("vit_tiny", {"depth": 3, "img_size": 16, "patch_size": 8})
    timm_ids = group_parameters(backbone, VisionTransformer.group_matcher(backbone), reverse=True)
    ours = {name: vit_layer_id(name, 3) for name, _ in backbone.named_parameters()}
    differ = sorted(name for name in ours if ours[name] != timm_ids[name])
    assert differ == ["norm.bias", "norm.weight"]
    assert (timm_ids["norm.weight"], ours["norm.weight"]) == (3, 4)


def test_layer_decay_ratios_hold_through_warmup_and_decay(tmp_path):
    decay = 0.5
    cfg = parse_cfg(
        tiny_linear_cfg(
            None,
            tmp_path,
            allow_random_backbone=True,
            backbone=TINY_BACKBONE,
            mode="finetune",
            optimizer={
                "name": "adamw",
                "batch_size": 256,
                "lr": 1e-3,
                "layer_decay": decay,
                "exclude_bias_n_norm_wd": True,
            },
            # nonzero start and end: a per-group schedule towards a shared min_lr would break the ratios
            scheduler={
                "name": "warmup_cosine",
                "warmup_epochs": 2,
                "warmup_start_lr": 1e-4,
                "min_lr": 1e-4,
                "interval": "epoch",
            },
            max_epochs=6,
        )
    )
    model = LinearModel(tiny_backbone(), cfg)
    [optimizer], [sched] = model.configure_optimizers()
    scheduler = sched["scheduler"]
    params_of = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for _ in range(cfg.max_epochs):
        head_lr = next(g["lr"] for g in optimizer.param_groups if g["name"] == f"layer_{DEPTH + 1}")
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = params_of[id(p)]
                layer = (
                    DEPTH + 1
                    if name.startswith("classifier.")
                    else vit_layer_id(name.removeprefix("backbone."), DEPTH)
                )
                assert group["lr"] / head_lr == pytest.approx(decay ** (DEPTH + 1 - layer))
                seen.add(name)
        optimizer.step()
        scheduler.step()
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
    # the schedule itself is the base lr's: warmup from warmup_start_lr, cosine towards min_lr
    assert head_lr == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 3 / 4)))


# ----------------------------------------------------------------- real fits
@pytest.mark.parametrize(
    "mode, blocks, trained_prefixes",
    [
        ("linear", None, ()),
        ("partial", 0.5, ("blocks.1.norm2.", "blocks.1.mlp.", "norm.")),
        ("finetune", None, ("",)),  # everything, the positional embedding included
    ],
)
def test_fit_trains_only_the_trainable_parts_and_logs_val_acc1(
    pretrained, tmp_path, mode, blocks, trained_prefixes
):
    extra = {"partial_blocks": blocks} if blocks is not None else {}
    cfg = tiny_linear_cfg(pretrained, tmp_path, mode=mode, **extra)
    before, _ = extract_backbone_state_dict(read_checkpoint(pretrained))
    trainer = run_linear(OmegaConf.create(cfg))
    after = {k: v.detach() for k, v in trainer.lightning_module.backbone.state_dict().items()}
    assert set(after) == set(before)
    for name, tensor in after.items():
        if name.startswith(trained_prefixes):
            assert not torch.equal(tensor, before[name]), f"{name} did not train"
        else:
            assert torch.equal(tensor, before[name]), f"{name} moved although frozen"
    metrics = trainer.callback_metrics
    assert 0 <= float(metrics["val_acc1"]) <= 100 and "val_acc5" in metrics
    assert float(metrics["val_effective_rank"]) >= 1
    assert math.isfinite(float(metrics["train_loss_epoch"]))
    run_dir = Path(cfg["checkpoint"]["dir"]) / "linear"
    [run] = list(run_dir.iterdir())
    assert (run / "args.json").is_file() and len(checkpoints_in(run)) == 1


def test_mixup_cutmix_fit_with_soft_targets(pretrained, tmp_path):
    cfg = tiny_linear_cfg(pretrained, tmp_path, mode="finetune", mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    trainer = run_linear(OmegaConf.create(cfg))
    model = trainer.lightning_module
    assert isinstance(model.loss_func, SoftTargetCrossEntropy) and model.mixup is not None
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train_loss_epoch"])) and "val_acc1" in metrics
    assert "train_acc1_epoch" not in metrics  # mixed targets have no single label to score


def test_random_backbone_runs_when_allowed_says_so_and_gets_online_knn(tmp_path, capsys):
    cfg = tiny_linear_cfg(
        None,
        tmp_path,
        allow_random_backbone=True,
        backbone=TINY_BACKBONE,
        knn_eval={"enabled": True, "k": 5},
        limit_train_batches=1,
    )
    trainer = run_linear(OmegaConf.create(cfg))
    assert "RANDOMLY INITIALISED" in capsys.readouterr().err
    metrics = trainer.callback_metrics
    assert "val_acc1" in metrics and 0 <= float(metrics["val_knn_acc1"]) <= 100


def test_auto_resume_continues_only_the_same_evaluation(pretrained, tmp_path):
    cfg = tiny_linear_cfg(pretrained, tmp_path, auto_resume={"enabled": True}, limit_train_batches=1)
    runs = Path(cfg["checkpoint"]["dir"]) / "linear"
    run_linear(OmegaConf.create(cfg))
    [first] = list(runs.iterdir())
    run_linear(OmegaConf.create(cfg))  # finished run found: nothing left to train, same folder
    assert list(runs.iterdir()) == [first]
    assert [p.name for p in checkpoints_in(first)] == [f"tiny-linear-{first.name}-ep=0.ckpt"]

    # the same settings on other weights are another experiment, never a continuation
    other = tmp_path / "other" / pretrained.name
    other.parent.mkdir()
    other.write_bytes(pretrained.read_bytes())
    (other.parent / "args.json").write_bytes((pretrained.parent / "args.json").read_bytes())
    run_linear(OmegaConf.create({**cfg, "pretrained_feature_extractor": str(other)}))
    assert len(list(runs.iterdir())) == 2


def test_auto_augment_adds_randaugment_and_erasing_at_the_backbone_size(pretrained, tmp_path):
    cfg = parse_cfg(tiny_linear_cfg(pretrained, tmp_path, auto_augment=True))
    train_loader, [val_loader] = build_linear_loaders(cfg, crop_size=32)
    steps = repr(train_loader.dataset.transform)
    assert "RandAugment" in steps and "RandomErasing" in steps
    assert "RandAugment" not in repr(val_loader.dataset.transform)
    x, y = next(iter(train_loader))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)
