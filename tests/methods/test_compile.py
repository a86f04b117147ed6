"""compile: True runs the step through torch.compile (encoder and decoder) on the CPU, with the
Trainer's checkpoint keys unchanged."""

import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.tiny import tiny_cfg


@pytest.mark.slow
def test_compiled_step_trains_and_keeps_checkpoint_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keys = {}
    for compiled in (False, True):
        root = tmp_path / str(compiled)
        cfg = tiny_cfg(root, method="mae", compile=compiled, limit_train_batches=2, limit_val_batches=1)
        trainer = run_pretrain(OmegaConf.create(cfg))
        model = trainer.lightning_module
        assert model._compiled is compiled
        (ckpt,) = checkpoints_in(next((root / "trained_models" / "mae").iterdir()))
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        keys[compiled] = set(state)
    assert keys[True] == keys[False]
