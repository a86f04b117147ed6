"""fp16 (``precision: 16-mixed``) with a real GradScaler: Lightning's own ``MixedPrecision`` plugin
and torch's ``GradScaler`` on the CPU (the code that runs on CUDA), injected into the Trainer the
runners build (``run_pretrain``/``run_linear``'s ``plugins`` seam), so the whole path runs under it.

The reference is the scaler's own contract: it halves its scale at every skipped step and, within
its growth interval, never raises it, so after N steps the scale is ``init x 0.5^skipped``."""

import csv
import math

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf

import solo_ext.regularizers.uniformity as uniformity_module
from solo_ext.config.errors import ConfigError
from solo_ext.methods.guarded import CHECKPOINT_KEY
from solo_ext.run.linear import run_linear
from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.errors import NonFiniteLossError
from solo_ext.utils.nonfinite import SCALE_FLOOR
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.test_linear_model import save_tiny_pretrained, tiny_linear_cfg
from tests.methods.tiny import ALL_REGULARIZERS, tiny_cfg

NORMAL, HUGE = 2.0**16, 2.0**40  # GradScaler's default; one that overflows for tens of steps


def fp16(init_scale: float) -> MixedPrecision:
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))


def logged(run_dir, key: str) -> list[float]:
    rows = [row for path in run_dir.glob("csv/version_*/metrics.csv") for row in csv.DictReader(open(path))]
    return [float(row[key]) for row in rows if row.get(key)]


def check_scaler_contract(plugin: MixedPrecision, init_scale: float, run_dir, steps: int) -> int:
    """The counted skipped steps agree with the scale, the log and the checkpoint; returns them."""
    scaler = plugin.scaler
    assert scaler.get_growth_interval() > steps  # no growth: the scale only ever halves
    skipped = round(math.log2(init_scale / scaler.get_scale()))
    counted = logged(run_dir, "amp_skipped_steps")
    assert counted[-1] == skipped
    assert logged(run_dir, "amp_scale")[-1] == scaler.get_scale()
    [*_, ckpt] = checkpoints_in(run_dir)
    saved = torch.load(ckpt, weights_only=False)
    assert saved[CHECKPOINT_KEY] == {"amp_skipped_steps": skipped}
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    return skipped


def pretrain_cfg(tmp_path, opt_kwargs: dict, **top):
    settings = {
        "precision": "16-mixed",
        "max_epochs": 2,
        "limit_train_batches": None,
        "limit_val_batches": 1,
        "data": {"dataset": "digits", "num_workers": 0, "fraction": 0.25},
    }
    cfg = tiny_cfg(tmp_path, method_kwargs={"regularizers": ALL_REGULARIZERS}, **{**settings, **top})
    cfg["optimizer"]["kwargs"] = opt_kwargs
    return cfg


@pytest.mark.parametrize("opt_kwargs", [{}, {"fused": False}], ids=["fused-adamw", "adamw"])
@pytest.mark.parametrize("init_scale", [NORMAL, HUGE], ids=["normal-scale", "huge-scale"])
def test_pretraining_trains_whole_epochs_in_fp16(tmp_path, monkeypatch, opt_kwargs, init_scale):
    monkeypatch.chdir(tmp_path)
    plugin = fp16(init_scale)
    trainer = run_pretrain(OmegaConf.create(pretrain_cfg(tmp_path, opt_kwargs)), plugins=[plugin])
    steps = 2 * trainer.num_training_batches
    assert trainer.global_step == steps and trainer.current_epoch == 2
    (run_dir,) = (tmp_path / "trained_models" / "mae-reg").iterdir()
    skipped = check_scaler_contract(plugin, init_scale, run_dir, steps)
    if init_scale == HUGE:
        # the scaler skipped its way down from 2^40 and then trained
        assert 10 <= skipped <= steps - 10
    else:
        assert skipped <= 2


@pytest.mark.parametrize("opt_kwargs", [{}, {"fused": False}], ids=["fused-adamw", "adamw"])
def test_a_diverging_lr_still_stops_with_exit_code_3_and_no_checkpoint(tmp_path, monkeypatch, opt_kwargs):
    monkeypatch.chdir(tmp_path)
    cfg = pretrain_cfg(tmp_path, opt_kwargs)
    cfg["optimizer"]["lr"] = 1e8
    with pytest.raises(NonFiniteLossError) as err:
        run_pretrain(OmegaConf.create(cfg), plugins=[fp16(NORMAL)])
    assert err.value.exit_code == 3
    assert "non-finite loss at global step 1 " in str(err.value)
    assert "train_reconstruction_loss" in str(err.value)
    (run_dir,) = (tmp_path / "trained_models" / "mae-reg").iterdir()
    assert checkpoints_in(run_dir) == []


def test_skipping_without_end_stops_at_the_scale_floor(tmp_path, monkeypatch):
    """A finite loss whose gradient is NaN (sqrt at 0): the scaler would skip forever; the guard
    stops once the scale falls below SCALE_FLOOR (33 halvings from 2^16), naming the gradients."""
    monkeypatch.chdir(tmp_path)

    def finite_loss_nan_gradient(z):
        return torch.sqrt((z - z.detach()).abs()).sum()

    monkeypatch.setattr(uniformity_module, "uniformity_loss", finite_loss_nan_gradient)
    data = {"dataset": "digits", "num_workers": 0, "fraction": 0.5}  # one epoch of 44 steps
    cfg = pretrain_cfg(tmp_path, {}, max_epochs=1, data=data)
    cfg["method_kwargs"]["regularizers"] = {"uniformity": {"weight": 0.1}}
    with pytest.raises(NonFiniteLossError) as err:
        run_pretrain(OmegaConf.create(cfg), plugins=[fp16(NORMAL)])
    halvings = math.ceil(math.log2(NORMAL / SCALE_FLOOR)) + 1  # 33: 2^16 -> 2^-17
    assert f"non-finite loss at global step {halvings - 1} " in str(err.value)
    assert f"GradScaler skipped {halvings} steps in a row" in str(err.value)
    (run_dir,) = (tmp_path / "trained_models" / "mae-reg").iterdir()
    assert checkpoints_in(run_dir) == []


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
@pytest.mark.parametrize("init_scale", [NORMAL, HUGE], ids=["normal-scale", "huge-scale"])
def test_linear_evaluation_trains_whole_epochs_in_fp16(tmp_path, monkeypatch, optimizer, init_scale):
    monkeypatch.chdir(tmp_path)
    pretrained = save_tiny_pretrained(tmp_path)
    cfg = tiny_linear_cfg(
        pretrained,
        tmp_path,
        mode="finetune",
        precision="16-mixed",
        max_epochs=2,
        limit_train_batches=None,
        data={"dataset": "digits", "num_workers": 0, "fraction": 0.25},
        optimizer={"name": optimizer, "batch_size": 16, "lr": 0.1, "weight_decay": 0.0},
    )
    plugin = fp16(init_scale)
    trainer = run_linear(OmegaConf.create(cfg), plugins=[plugin])
    steps = 2 * trainer.num_training_batches
    assert trainer.global_step == steps
    (run_dir,) = (tmp_path / "trained_models" / "linear").iterdir()
    skipped = check_scaler_contract(plugin, init_scale, run_dir, steps)
    assert (10 <= skipped <= steps - 10) if init_scale == HUGE else skipped <= 2


def test_16_mixed_on_the_cpu_without_the_plugin_is_still_refused(tmp_path):
    cfg = tiny_cfg(tmp_path, precision="16-mixed")
    with pytest.raises(ConfigError, match=r"^precision='16-mixed': Lightning would run it as 'bf16-mixed'"):
        run_pretrain(OmegaConf.create(cfg))
    assert not (tmp_path / "trained_models").exists()
