"""The linear/fine-tuning config: backbone from args.json, modes, one-line errors, lr scaling, and
every shipped YAML composing into a valid config."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from solo_ext.config.errors import ConfigError
from solo_ext.config.linear import parse_cfg
from tests.methods.test_linear_model import TINY_BACKBONE, save_tiny_pretrained, tiny_linear_cfg

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "linear"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("pretrain"))


def parse(pretrained, tmp_path, **top):
    return parse_cfg(tiny_linear_cfg(pretrained, tmp_path, **top))


def test_backbone_and_method_come_from_args_json(pretrained, tmp_path):
    cfg = parse(pretrained, tmp_path, backbone={"kwargs": {"drop_path_rate": 0.1}})
    assert cfg.backbone.name == "vit_tiny"
    assert dict(cfg.backbone.kwargs) == {**TINY_BACKBONE["kwargs"], "drop_path_rate": 0.1}
    assert cfg.pretrain_method == "mae"
    assert cfg.mode == "linear" and cfg.finetune is False and cfg.method == "linear"
    assert cfg.data.num_classes == 10


def test_run_folder_means_its_newest_checkpoint(pretrained, tmp_path):
    newer = pretrained.with_name("tiny-pretrun1-ep=3.ckpt")
    newer.write_bytes(pretrained.read_bytes())
    try:
        cfg = parse(str(pretrained.parent), tmp_path)
    finally:
        newer.unlink()
    assert cfg.pretrained_feature_extractor == str(newer)


def test_finetune_flag_selects_the_mode_and_must_agree(pretrained, tmp_path):
    assert parse(pretrained, tmp_path, finetune=True).mode == "finetune"
    assert parse(pretrained, tmp_path, mode="finetune").finetune is True
    with pytest.raises(ConfigError, match=r"^finetune=True: contradicts mode='partial'"):
        parse(pretrained, tmp_path, finetune=True, mode="partial", partial_blocks=1)


def test_lr_is_scaled_by_the_global_batch(pretrained, tmp_path):
    cfg = parse(
        pretrained,
        tmp_path,
        optimizer={"name": "lars", "batch_size": 64, "lr": 0.1},
        scheduler={"name": "warmup_cosine", "warmup_epochs": 0, "min_lr": 0.01},
        devices=2,
        num_nodes=2,
        accumulate_grad_batches=4,
    )
    assert cfg.derived.world_size == 4 and cfg.derived.global_batch_size == 1024
    assert cfg.derived.lr == pytest.approx(0.4) and cfg.derived.min_lr == pytest.approx(0.04)


@pytest.mark.parametrize(
    "top, message",
    [
        ({"mode": "partial"}, r"^partial_blocks=None: mode=partial needs"),
        ({"mode": "partial", "partial_blocks": 0.7}, r"^partial_blocks=0.7: must be 0.5 .* \[1, 2\]"),
        ({"mode": "partial", "partial_blocks": 3}, r"^partial_blocks=3: must be"),
        ({"partial_blocks": 1}, r"^partial_blocks=1: only used with mode=partial"),
        ({"mode": "lineer"}, r"^mode='lineer': must be one of linear, partial, finetune, probe"),
        ({"mode": "probe"}, r"^optimizer=.*: not read by mode=probe .*probe.lrs x probe.weight_decays"),
        (
            {"mode": "probe", "optimizer": None, "batchnorm_head": True},
            r"^batchnorm_head=True: not read by mode=probe",
        ),
        (
            {"mode": "probe", "optimizer": None, "probe": {"lrs": [0.1, -1]}},
            r"^probe.lrs\[1\]=-1: must be a number > 0",
        ),
        (
            {"mode": "probe", "optimizer": None, "probe": {"holdout_fraction": 1}},
            r"^probe.holdout_fraction=1: must be",
        ),
        (
            {"mode": "probe", "optimizer": None, "probe": {"train_views": "crops"}},
            r"^probe.train_views='crops': must be one of clean, augmented",
        ),
        (
            {"mode": "probe", "optimizer": None, "probe": {"num_views": 4}},
            r"^probe.num_views=4: only used with train_views=augmented",
        ),
        ({"optimizer": None}, r"^optimizer=None: missing; mode=linear trains with it"),
        ({"features": "avg"}, r"^features='avg': must be one of cls, mean"),
        (
            {"optimizer": {"name": "sgd", "batch_size": 16, "lr": 0.1, "layer_decay": 0.75}},
            r"layer_decay=0.75: only",
        ),
        (
            {"mode": "finetune", "mixup": 0.8, "optimizer": {"name": "sgd", "batch_size": 15, "lr": 0.1}},
            r"even",
        ),
        ({"label_smoothing": 1.0}, r"^label_smoothing=1.0: must be a number in \[0, 1\)"),
        ({"optimizer": {"name": "lasr", "batch_size": 16, "lr": 0.1}}, r"did you mean 'lars'"),
        ({"batchnorm_haed": True}, r"^batchnorm_haed=True: unknown key.*did you mean 'batchnorm_head'"),
        ({"method": "mae"}, r"^method='mae': not a linear-evaluation key"),
        ({"backbone": {"name": "vit_tiyn"}}, r"did you mean 'vit_tiny'"),
    ],
)
def test_bad_values_stop_with_one_line(pretrained, tmp_path, top, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse(pretrained, tmp_path, **top)
    assert "\n" not in str(info.value)


def test_random_backbone_needs_the_flag_and_a_backbone(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^pretrained_feature_extractor=None: no checkpoint given.*allow_random"
    ):
        parse(None, tmp_path, backbone=TINY_BACKBONE)
    with pytest.raises(ConfigError, match=r"^backbone.name: missing and no checkpoint"):
        parse(None, tmp_path, allow_random_backbone=True)
    assert (
        parse(None, tmp_path, allow_random_backbone=True, backbone=TINY_BACKBONE).backbone.name == "vit_tiny"
    )


def test_checkpoint_path_problems(pretrained, tmp_path):
    with pytest.raises(ConfigError, match=r"no such checkpoint file"):
        parse(tmp_path / "missing.ckpt", tmp_path)
    with pytest.raises(ConfigError, match=r"must end with one of \.ckpt, \.pth, \.pt"):
        parse(pretrained.parent / "args.json", tmp_path)
    with pytest.raises(ConfigError, match=r"a folder without checkpoints"):
        parse(tmp_path, tmp_path)
    bare = tmp_path / "bare" / "weights.pth"
    bare.parent.mkdir()
    bare.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^backbone.name: missing and no args.json with a backbone beside"):
        parse(bare, tmp_path)
    (bare.parent / "args.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"cannot read .*args.json"):
        parse(bare, tmp_path)


@pytest.mark.parametrize(
    "folder, name",
    [
        (folder.name, path.name)
        for folder in sorted(SCRIPTS.iterdir())
        for path in sorted(folder.glob("*.yaml"))
    ],
)
def test_every_shipped_yaml_composes_and_parses(pretrained, tmp_path, folder, name):
    overrides = [
        f"pretrained_feature_extractor={pretrained.parent}",
        f"checkpoint.dir={tmp_path}",
        "accelerator=cpu",
        "precision=32",
    ]
    with initialize_config_dir(config_dir=str(SCRIPTS / folder), version_base="1.2"):
        raw = compose(config_name=name, overrides=overrides)
    cfg = parse_cfg(raw)
    assert cfg.backbone.name == "vit_tiny" and cfg.data.num_classes > 0
    if cfg.mode == "finetune":
        assert cfg.backbone.kwargs.drop_path_rate == 0.1
    if cfg.mode == "probe":
        assert cfg.optimizer is None and cfg.derived.protocols.linear.startswith("probe on frozen")
    elif folder != "digits":  # MAE's global batches, with the recipes' device counts
        assert cfg.derived.global_batch_size == {"linear": 16384, "finetune": 1024}[cfg.mode]


def test_solo_learn_linear_recipe_without_momentum_gets_0_9(pretrained, tmp_path):
    cfg = parse(pretrained, tmp_path, optimizer={"name": "sgd", "batch_size": 16, "lr": 0.1})
    assert cfg.optimizer.kwargs.momentum == 0.9
    lars = parse(pretrained, tmp_path, optimizer={"name": "lars", "batch_size": 16, "lr": 0.1})
    assert dict(lars.optimizer.kwargs) == {
        "momentum": 0.9,
        "eta": 1e-3,
        "clip_lr": False,
        "exclude_bias_n_norm": False,
    }


def test_features_and_knn_follow_the_run(tmp_path):
    import json

    ckpt = save_tiny_pretrained(tmp_path / "run")
    args_path = ckpt.parent / "args.json"
    args = json.loads(args_path.read_text())
    args["method_kwargs"]["online_features"] = "mean"
    args["knn_eval"].update(k=7, distance_func="cosine", T=0.1)
    args_path.write_text(json.dumps(args))
    cfg = parse(ckpt, tmp_path, knn_eval={"enabled": True})
    assert cfg.features == "mean"
    assert (cfg.knn_eval.k, cfg.knn_eval.T, cfg.knn_eval.distance_func) == (7, 0.1, "cosine")
    assert cfg.derived.protocols.linear == "linear on mean features, linear head"
    assert cfg.derived.protocols.knn.startswith("weighted kNN on mean features, k 7, T 0.1, cosine; bank: ")
    # what the recipe or the command line sets wins
    cfg = parse(ckpt, tmp_path, features="cls", knn_eval={"enabled": True, "k": 3})
    assert cfg.features == "cls" and cfg.knn_eval.k == 3 and cfg.knn_eval.distance_func == "cosine"


def test_batches_bank_refuses_mixup(pretrained, tmp_path):
    with pytest.raises(ConfigError, match=r"^knn_eval.bank='batches': mixup/cutmix blend"):
        parse(pretrained, tmp_path, mixup=0.8, knn_eval={"enabled": True})
    cfg = parse(pretrained, tmp_path, mixup=0.8, knn_eval={"enabled": True, "bank": "clean"})
    assert cfg.knn_eval.bank == "clean"
