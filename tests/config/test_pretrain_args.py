"""The pretraining config: solo-learn's defaults filled in and written to args.json, the batch and
weight each regularizer works at, the accumulation warning, and the protocols named."""

import re

import pytest

from solo_ext.config.errors import ConfigError
from solo_ext.config.pretrain import parse_cfg
from solo_ext.data.augmentations import crop_size_of
from solo_ext.run.pretrain import regularizer_lines
from tests.methods.tiny import tiny_cfg


def parse(tmp_path, **top):
    return parse_cfg(tiny_cfg(tmp_path, **top))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sgd", {"momentum": 0.9}),
        ("lars", {"momentum": 0.9, "eta": 1e-3, "clip_lr": False, "exclude_bias_n_norm": False}),
        ("adamw", {"betas": [0.9, 0.999]}),
        ("adam", {}),
    ],
)
def test_solo_learn_optimizer_defaults_fill_what_the_recipe_leaves_out(tmp_path, name, expected):
    cfg = parse(tmp_path, optimizer={"name": name, "batch_size": 16, "lr": 0.1, "classifier_lr": 0.1})
    assert dict(cfg.optimizer.kwargs) == expected


def test_the_recipe_keeps_what_it_sets(tmp_path):
    optimizer = {"name": "lars", "batch_size": 16, "lr": 0.1, "kwargs": {"momentum": 0.5, "clip_lr": True}}
    cfg = parse(tmp_path, optimizer=optimizer)
    assert dict(cfg.optimizer.kwargs) == {
        "momentum": 0.5,
        "eta": 1e-3,
        "clip_lr": True,
        "exclude_bias_n_norm": False,
    }


def test_knn_defaults_are_solo_learns(tmp_path):
    knn = parse(tmp_path).knn_eval
    assert (knn.k, knn.T, knn.distance_func, knn.bank) == (20, 0.07, "euclidean", "batches")
    with pytest.raises(ConfigError, match=r"^knn_eval.bank='train': must be one of batches, clean"):
        parse(tmp_path, knn_eval={"enabled": True, "bank": "train"})


def test_each_regularizer_batch_and_weight_are_derived(tmp_path):
    cfg = parse(
        tmp_path,
        method_kwargs={
            "regularizers": {
                "uniformity": {"weight": 0.00125, "gather": True},
                "magma": {
                    "layers": [0],
                    "gather": False,
                    "scheduler": {"name": "warmup", "base_weight": 0, "warmup_epochs": 1, "weight": 0.5},
                },
            }
        },
        devices=4,
        accelerator="cpu",
        strategy="ddp",
        max_epochs=3,
    )
    regs = cfg.derived.regularizers
    assert regs.uniformity.batch == 16 * 4 and regs.uniformity.gather is True
    assert regs.uniformity.effective_weight == pytest.approx(0.00125)
    # what U-MAE's code (local-slice gather) would need on these 4 processes for the same run
    assert regs.uniformity.upstream_lamb == pytest.approx(0.005)
    assert regs.magma.batch == 16 and regs.magma.effective_weight == 0.5 and regs.magma.upstream_lamb == 0.5
    lines = regularizer_lines(cfg)
    assert lines[0].startswith("regularizer uniformity: sees a batch of 64 (gathered over processes)")
    assert not any(line.startswith("WARNING") for line in lines)


def test_effective_weight_is_the_peak_the_schedule_reaches_in_the_run(tmp_path):
    # the peak at epoch 2.75 of a 3-epoch run is reached; one after the run is not
    triangle = {
        "name": "triangle",
        "start_weight": 0.0,
        "max_weight": 2.0,
        "end_weight": 0.5,
        "start_epoch": 2,
        "mid_epoch": 2.75,
        "end_epoch": 3,
    }
    for schedule, peak in (
        (triangle, 2.0),
        ({**triangle, "start_epoch": 3, "mid_epoch": 4, "end_epoch": 5}, 0.0),
    ):
        cfg = parse(tmp_path, method_kwargs={"regularizers": {"tcr": {"scheduler": schedule}}}, max_epochs=3)
        assert cfg.derived.regularizers.tcr.effective_weight == peak
        assert cfg.derived.regularizers.tcr.upstream_lamb == peak  # one process


def test_accumulation_with_a_batch_regularizer_warns_once(tmp_path):
    cfg = parse(
        tmp_path,
        method_kwargs={"regularizers": {"tcr": {"weight": 0.01}}},
        accumulate_grad_batches=4,
    )
    assert cfg.derived.regularizers.tcr.batch == 16
    warnings = [line for line in regularizer_lines(cfg) if line.startswith("WARNING")]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("WARNING: accumulate_grad_batches=4 does not enlarge the batch tcr")
    plain = parse(tmp_path, method="mae", accumulate_grad_batches=4)
    assert not [line for line in regularizer_lines(plain) if line.startswith("WARNING")]


def test_protocols_are_named(tmp_path):
    cfg = parse(tmp_path, method_kwargs={"online_features": "mean"}, knn_eval={"enabled": True, "k": 5})
    assert cfg.derived.protocols.online_linear == "linear probe on detached mean features"
    assert cfg.derived.protocols.online_knn == (
        "weighted kNN on mean features, k 5, euclidean; bank: training batches of the epoch as the "
        "method sees them (solo-learn)"
    )
    clean = parse(tmp_path, knn_eval={"enabled": True, "distance_func": "cosine", "bank": "clean"})
    assert clean.derived.protocols.online_knn == (
        "weighted kNN on cls features, k 20, T 0.07, cosine; bank: clean training set through the val "
        "transform"
    )


@pytest.mark.parametrize(("devices", "world"), [(2, 2), ("3", 3), ([0, 1], 2), ("0,1", 2), ("0, 2,", 2)])
def test_devices_count_as_lightning_counts_them(tmp_path, devices, world):
    cfg = parse(tmp_path, devices=devices, accelerator="cpu", strategy="ddp")
    assert cfg.derived.world_size == world


@pytest.mark.parametrize("devices", [0, "0", "a,b", "gpu"])
def test_devices_that_name_no_device_are_refused(tmp_path, devices):
    with pytest.raises(ConfigError, match=rf"^devices={re.escape(repr(devices))}: \S") as err:
        parse(tmp_path, devices=devices, accelerator="cpu")
    assert "\n" not in str(err.value)


def test_an_unset_crop_size_is_the_datasets_everywhere(tmp_path):
    augmentations = [{"rrc": {"enabled": True, "crop_min_scale": 0.5}, "horizontal_flip": {"prob": 0.0}}]
    assert crop_size_of(None, "digits") == 32 and crop_size_of(24, "digits") == 24
    assert parse(tmp_path, augmentations=augmentations).augmentations[0].crop_size == 32
    backbone = {"name": "vit_tiny", "kwargs": {"img_size": 64, "patch_size": 8, "depth": 2}}
    with pytest.raises(ConfigError, match=r"^backbone.kwargs.img_size=64: .* crop_size \(32\)"):
        parse(tmp_path, augmentations=augmentations, backbone=backbone)
