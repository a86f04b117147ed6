"""MAE and MAE + regularizers: config mapping, loss composition, zero-weight skipping, a real fit,
checkpoints and auto-resume."""

import csv
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.config.errors import ConfigError
from solo_ext.config.pretrain import parse_cfg
from solo_ext.losses.mae import mae_loss_func
from solo_ext.losses.magma import magma_loss
from solo_ext.losses.tcr import tcr_loss
from solo_ext.losses.uniformity import uniformity_loss
from solo_ext.methods import METHODS
from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.index_noise import index_noise
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.tiny import ALL_REGULARIZERS, tiny_cfg

WARMUP = {"name": "warmup", "base_weight": 0, "warmup_epochs": 2, "weight": 1, "reg_epochs": 100}


def test_magma_legacy_keys_map_to_the_general_form(tmp_path):
    cfg = parse_cfg(
        tiny_cfg(
            tmp_path,
            method_kwargs={
                "layers": [0],
                "uniformity_weight": 0.01,
                "reg_scheduler": WARMUP,
                "rbf_scale": 2.0,
            },
        )
    )
    regs = OmegaConf.to_container(cfg.method_kwargs.regularizers)
    assert regs["magma"]["layers"] == [0] and regs["magma"]["target_layer"] == 1
    assert regs["magma"]["scheduler"]["name"] == "warmup" and regs["magma"]["rbf_scale"] == 2.0
    assert regs["magma"]["gather"] is False
    assert regs["uniformity"]["scheduler"] == {"name": "constant", "weight": 0.01, "interval": "epoch"}
    assert regs["uniformity"]["gather"] is False
    # args.json holds the resolved form; parsing it again gives the same config
    again = parse_cfg(OmegaConf.to_container(cfg))
    assert OmegaConf.to_container(again.method_kwargs) == OmegaConf.to_container(cfg.method_kwargs)


def test_two_layers_means_first_regularizes_second(tmp_path):
    cfg = parse_cfg(tiny_cfg(tmp_path, method_kwargs={"layers": [0, 1], "reg_scheduler": WARMUP}))
    assert cfg.method_kwargs.regularizers.magma.layers == [0]
    assert cfg.method_kwargs.regularizers.magma.target_layer == 1


def test_u_mae_schedule_weights_uniformity(tmp_path):
    cfg = parse_cfg(tiny_cfg(tmp_path, method="u-mae", method_kwargs={"reg_scheduler": WARMUP}))
    assert list(cfg.method_kwargs.regularizers) == ["uniformity"]
    assert cfg.method_kwargs.regularizers.uniformity.scheduler.name == "warmup"


@pytest.mark.parametrize(
    "method_kwargs, message",
    [
        ({"layers": [0]}, "method_kwargs.reg_scheduler: missing"),
        ({"layers": [], "reg_scheduler": WARMUP}, "method_kwargs.reg_scheduler={'name': 'warmup'"),
        ({"reg_scheduler": WARMUP}, "set, but method_kwargs.layers is empty"),
        ({"layers": [5], "reg_scheduler": WARMUP}, "method_kwargs.layers[0]=5"),
        ({"regularizers": {"uniformty": {"weight": 1}}}, "did you mean 'uniformity'"),
        ({"regularizers": {"tcr": {"weight": 1, "scheduler": WARMUP}}}, "exactly one of weight"),
        ({"regularizers": {"tcr": {"weight": 1, "mu": -1}}}, "method_kwargs.regularizers.tcr.mu=-1"),
        (
            {"regularizers": {"tcr": {"weight": 1, "features": "pooled"}}},
            "regularizers.tcr.features='pooled'",
        ),
        (
            {"uniformity_weight": 0.1, "regularizers": {"uniformity": {"weight": 1}}},
            "also set by MAGMA's flat keys",
        ),
        ({"regularizers": {"magma": {"weight": 1, "layers": [1]}}}, "holds only the target block"),
        ({"mask_ratio": 1.0}, "method_kwargs.mask_ratio=1.0"),
        ({"decoder_num_heads": 3}, "method_kwargs.decoder_num_heads=3"),
        ({"reg_scheduler": {"name": "warmpu", "weight": 1}, "layers": [0]}, "did you mean 'warmup'"),
    ],
)
def test_bad_regularizer_config_is_one_line(tmp_path, method_kwargs, message):
    with pytest.raises(ConfigError) as err:
        parse_cfg(tiny_cfg(tmp_path, method_kwargs=method_kwargs))
    assert message in str(err.value) and "\n" not in str(err.value)


def _model_and_batch(tmp_path, regularizers):
    cfg = parse_cfg(tiny_cfg(tmp_path, method_kwargs={"regularizers": regularizers, "index_masks": True}))
    model = METHODS[cfg.method](cfg)
    torch.manual_seed(0)
    batch = [torch.arange(16), [torch.randn(16, 3, 32, 32)], torch.randint(0, 10, (16,))]
    return model, batch


def test_loss_is_reconstruction_plus_weighted_regularizers(tmp_path):
    model, batch = _model_and_batch(tmp_path, ALL_REGULARIZERS)
    model._weights = {"uniformity": 0.1, "tcr": 0.1, "magma": 0.5}
    model.log_dict = lambda *a, **k: None  # no trainer attached
    total = model.training_step(batch, 0)

    # independent recomputation from the backbone outputs
    noise = index_noise(batch[0], model.backbone.num_patches, model.cfg.seed, 0, 0)
    out = model.backbone.forward_features(batch[1][0], 0.75, (0, 1), noise=noise)
    pred = model.decoder(out.tokens, out.ids_restore)
    recon = mae_loss_func(batch[1][0], pred, out.mask, 8, False)
    cls = out.tokens[:, 0]
    magma = magma_loss(out.blocks[0][:, 1:].mean(1), out.blocks[1][:, 1:].mean(1))
    logits = model.classifier(cls.detach())
    expected = (
        recon
        + 0.1 * uniformity_loss(cls)
        + 0.1 * tcr_loss(cls, mu=1.0)
        + 0.5 * magma
        + torch.nn.functional.cross_entropy(logits, batch[2])
    )
    torch.testing.assert_close(total, expected)


def test_zero_weight_regularizer_is_not_computed(tmp_path):
    model, batch = _model_and_batch(tmp_path, {"magma": {"layers": [0], "scheduler": WARMUP}})
    logged = {}
    model.log_dict = lambda logs, **k: logged.update(logs)
    model._weights = {"magma": 0.0}
    out = model.training_forward(batch[1][0], batch[0], 0)
    assert out["blocks"] == ()  # no block output requested while MAGMA's weight is 0
    model.training_step(batch, 0)
    assert logged["train_magma_weight"] == 0.0 and "train_magma_loss" not in logged
    model._weights = {"magma": 1.0}
    model.training_step(batch, 0)
    assert (
        "train_magma_loss" in logged and len(model.training_forward(batch[1][0], batch[0], 0)["blocks"]) == 2
    )


def test_weights_follow_the_schedule_by_epoch(tmp_path):
    model, _ = _model_and_batch(tmp_path, {"magma": {"layers": [0], "scheduler": WARMUP}})
    reg = model.regularizers[0]
    assert [reg.weight(0, epoch, 0.0) for epoch in range(4)] == [0.0, 0.0, 1.0, 1.0]


def _metrics(run_dir):
    rows = []
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        rows += list(csv.DictReader(open(path)))
    return rows


def test_fit_writes_checkpoint_args_and_metrics_then_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"regularizers": ALL_REGULARIZERS},
        max_epochs=2,
        auto_resume={"enabled": True},
    )
    trainer = run_pretrain(OmegaConf.create({**cfg, "max_epochs": 2}))
    run_dirs = list((tmp_path / "trained_models" / "mae-reg").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert (run_dir / "args.json").exists()
    ckpts = checkpoints_in(run_dir)
    assert [c.name for c in ckpts] == [f"tiny-{run_dir.name}-ep=1.ckpt"]  # keep_prev off
    rows = _metrics(run_dir)
    for key in ("train_reconstruction_loss_step", "train_uniformity_loss_step", "train_tcr_loss_step"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert values and all(math.isfinite(v) for v in values)
    assert any(r.get("val_knn_acc1") for r in rows) and any(r.get("val_acc1") for r in rows)
    assert any(r.get("val_effective_rank") for r in rows)
    assert (run_dir / "reconstructions" / "ep=1.png").exists()
    results = json.loads((run_dir / "results.json").read_text())
    knn = results["metrics"]["val_knn_acc1"]
    assert knn["final"] == results["history"]["val_knn_acc1"][-1][1] and knn["best"] >= knn["final"]
    assert knn["protocol"].startswith("weighted kNN on cls features, k 20, euclidean; bank: training batches")
    assert results["checkpoint"] == str(ckpts[-1]) and len(results["spectrum"]) == 32
    assert "train_uniformity_loss" in results["metrics"]
    steps_done = trainer.global_step

    # the same config with more epochs is a different run; the same config resumes
    trainer = run_pretrain(OmegaConf.create({**cfg, "max_epochs": 2}))
    assert trainer.global_step == steps_done  # nothing left to do: it resumed, not restarted
    assert len(list((tmp_path / "trained_models" / "mae-reg").iterdir())) == 1


def test_lr_is_scaled_by_global_batch(tmp_path):
    cfg = parse_cfg(tiny_cfg(tmp_path, accumulate_grad_batches=2, num_nodes=1))
    assert cfg.derived.global_batch_size == 32
    assert cfg.derived.lr == pytest.approx(1e-3 * 32 / 256)
    assert cfg.derived.classifier_lr == pytest.approx(1e-2 * 32 / 256)


def test_pretraining_decays_the_cls_and_mask_tokens_as_mae(tmp_path):
    # MAE's optimizer groups exempt only 1-D parameters and biases from weight decay
    from solo_ext.config.pretrain import parse_cfg
    from solo_ext.methods import METHODS
    from solo_ext.optim.factory import build_param_groups

    optimizer = {"name": "adamw", "batch_size": 16, "lr": 1e-3, "exclude_bias_n_norm_wd": True}
    cfg = parse_cfg(tiny_cfg(tmp_path, method="mae", optimizer=optimizer))
    model = METHODS["mae"](cfg)
    groups = build_param_groups(model.param_groups(), True, model.no_weight_decay_names())
    decayed = {id(p) for g in groups if "weight_decay" not in g for p in g["params"]}
    assert id(model.backbone.cls_token) in decayed and id(model.decoder.mask_token) in decayed
    exempt = {id(p) for g in groups if g["name"].endswith("_no_decay") for p in g["params"]}
    assert all(p.ndim <= 1 for p in model.parameters() if id(p) in exempt)


@pytest.mark.parametrize("bank, loaders", [("batches", 1), ("clean", 2)])
def test_knn_bank_protocols(tmp_path, monkeypatch, bank, loaders):
    # "batches": the bank is what the method sees in training (solo-learn); "clean": the training
    # set through the val transform, an extra validation loader
    from solo_ext.run.pretrain import build_pretrain_loaders

    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(tmp_path, method="mae", knn_eval={"enabled": True, "bank": bank})
    assert len(build_pretrain_loaders(parse_cfg(cfg))[1]) == loaders
    run_pretrain(OmegaConf.create(cfg))
    run_dir = next((tmp_path / "trained_models" / "mae").iterdir())
    knn = [float(r["val_knn_acc1"]) for r in _metrics(run_dir) if r.get("val_knn_acc1")]
    assert knn and 0 <= knn[-1] <= 100


def test_regularizers_reading_the_same_features_share_one_gather(tmp_path, monkeypatch):
    import solo_ext.regularizers.base as base

    calls = []
    monkeypatch.setattr(base, "gather", lambda z: calls.append(z.shape) or z)
    model, batch = _model_and_batch(tmp_path, ALL_REGULARIZERS)
    model._weights = {"uniformity": 0.1, "tcr": 0.1, "magma": 0.5}
    model.log_dict = lambda *a, **k: None
    model.training_step(batch, 0)
    # uniformity and TCR read the cls token (one gather); MAGMA gathers its two blocks
    assert len(calls) == 3


@pytest.mark.parametrize(
    "flat, message",
    [
        ({"uniformity_weight": "abc"}, "method_kwargs.uniformity_weight='abc': must be a number"),
        (
            {"layers": [0], "reg_scheduler": {**WARMUP, "weight": "x"}},
            "method_kwargs.reg_scheduler.weight='x': must be a number",
        ),
        ({"layers": [0], "reg_scheduler": WARMUP, "rbf_scale": 0}, "method_kwargs.rbf_scale=0: must be"),
    ],
)
def test_magma_flat_keys_are_named_as_written(tmp_path, flat, message):
    with pytest.raises(ConfigError) as err:
        parse_cfg(tiny_cfg(tmp_path, method_kwargs=flat))
    assert str(err.value).startswith(message)


def test_each_method_declares_its_kwargs_and_the_schema_derives_its_registry():
    from solo_ext.config.schema import METHOD_KWARGS

    assert METHOD_KWARGS == {name: method.Kwargs for name, method in METHODS.items()}
    for name, method in METHODS.items():
        # declared in the module of the method (or of the method it extends), not in the config layer
        owners = {cls.__module__ for cls in method.__mro__}
        assert method.Kwargs.__module__ in owners, name
        assert method.Kwargs.__module__.startswith("solo_ext.methods."), name


def test_the_runner_hands_the_method_the_weights_as_validated_once(tmp_path):
    """Between the YAML and the loss a regularizer's weight is validated once: the method holds
    the very schedule objects the config layer built (no second validation of a stored copy),
    and a method built from the stored config alone gets equal ones."""
    from solo_ext.config.pretrain import parse_run

    cfg, kwargs = parse_run(tiny_cfg(tmp_path, method_kwargs={"regularizers": ALL_REGULARIZERS}))
    model = METHODS[cfg.method](cfg, kwargs)
    assert [r.name for r in model.regularizers] == ["uniformity", "tcr", "magma"]
    for reg in model.regularizers:
        assert reg.schedule is getattr(kwargs.regularizers, reg.name).scheduler
    stored = METHODS[cfg.method](cfg)
    for reg, again in zip(model.regularizers, stored.regularizers):
        assert again.schedule == reg.schedule and again.schedule is not reg.schedule
    assert cfg.derived.regularizers.tcr.effective_weight == 0.1
