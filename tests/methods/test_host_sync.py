"""The training step makes no host-device synchronisation between logging steps: every
conversion of a tensor to a host value (item, float, int, bool, tolist, cpu, numpy) is counted
while Lightning runs training steps that do not log, and must be zero."""

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.run.pretrain import run_pretrain
from tests.methods.tiny import ALL_REGULARIZERS, tiny_cfg

CONVERSIONS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "cpu", "numpy")


class CountHostReads(pl.Callback):
    """Counts host conversions from the start of a training batch to its end, for the batches
    after which Lightning does not log (log_every_n_steps)."""

    def __init__(self, monkeypatch, every: int) -> None:
        self.every, self.counting, self.seen, self.windows = every, False, [], 0
        for name in CONVERSIONS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.counting:
                    import traceback

                    self.seen.append((_name, "".join(traceback.format_stack(limit=6)[:-1])))
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        # not the steps at which Lightning logs or the guard reads its flag
        self.counting = step % self.every not in (0, self.every - 1) and step > 0
        self.windows += self.counting

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.counting = False


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_no_host_conversion_between_logging_steps(tmp_path, monkeypatch, optimizer):
    monkeypatch.chdir(tmp_path)
    counter = CountHostReads(monkeypatch, every=5)
    monkeypatch.setattr(
        "solo_ext.run.pretrain.LearningRateMonitor", lambda **kwargs: counter
    )  # the lr monitor reads lrs (Python floats) at logging steps only; the counter takes its place
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"regularizers": ALL_REGULARIZERS},
        optimizer={"name": optimizer, "batch_size": 16, "lr": 1e-3, "classifier_lr": 1e-2},
        limit_train_batches=12,
        log_every_n_steps=5,
        knn_eval={"enabled": True, "bank": "batches"},
        checkpoint={"enabled": False, "dir": str(tmp_path / "tm")},
    )
    run_pretrain(OmegaConf.create(cfg))
    assert counter.windows >= 6
    assert not counter.seen, "\n".join(f"{name}:\n{stack}" for name, stack in counter.seen[:3])
