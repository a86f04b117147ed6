"""The training step makes no host-device synchronisation between logging steps.

The syncs are counted at the aten level, through a TorchDispatchMode active from the start of a
training batch to its end (forward, backward, optimizer and scheduler step, logging) for the
batches after which Lightning does not log. On a CPU nothing waits, but the same aten calls are
the ones that block the host on a GPU: reading a value (``_local_scalar_dense``: ``item()``,
``float()``, ``if tensor:``), outputs whose shape depends on the values (``nonzero``,
``masked_select``, ``unique``, indexing with a boolean mask), checks that raise on the host
(``_linalg_check_errors``: ``torch.linalg.cholesky``, ``inv``, ``solve``). Conversions that
dispatch nothing on a CPU tensor (``cpu()``, ``numpy()``, ``tolist()``) are counted where Python
calls them. The expectation is zero, in float32 and in bf16-mixed.
"""

import traceback

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from solo_ext.run.pretrain import run_pretrain
from tests.methods.tiny import ALL_REGULARIZERS, tiny_cfg

aten = torch.ops.aten

# aten calls that wait for the device whatever their arguments
ALWAYS_SYNC = {
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.allclose.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.unique_dim_consecutive.default,
    aten.bincount.default,
    aten._linalg_check_errors.default,
}
# indexing (read or write) with a boolean or byte mask: the mask's nonzero() is taken inside
MASK_INDEXING = {
    aten.index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
}
# where Python reads a CPU tensor without dispatching anything (on a GPU tensor: a copy and a wait)
PYTHON_CONVERSIONS = ("cpu", "numpy", "tolist")


def _syncs(func, args, kwargs) -> bool:
    if func in ALWAYS_SYNC:
        return True
    if func in MASK_INDEXING:
        return any(
            isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)
            for index in args[1]
            if index is not None
        )
    if func is aten.repeat_interleave.Tensor:  # the output length is read unless given
        return kwargs.get("output_size") is None
    if func in (aten._to_copy.default, aten.copy_.default):  # device to host
        source = args[1] if func is aten.copy_.default else args[0]
        target = args[0].device if func is aten.copy_.default else kwargs.get("device")
        return source.device.type != "cpu" and target is not None and torch.device(target).type == "cpu"
    return False


def _where() -> str:
    return "".join(traceback.format_stack(limit=9)[:-2])


class SyncCounter(TorchDispatchMode):
    """Records every aten call that would synchronise the host with the device."""

    def __init__(self):
        super().__init__()
        self.seen, self.calls = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls += 1
        if _syncs(func, args, kwargs):
            self.seen.append((str(func), _where()))
        return func(*args, **kwargs)


class CountHostSyncs(pl.Callback):
    """Runs a SyncCounter from the start of a training batch to its end, for the batches after
    which Lightning does not log (log_every_n_steps) nor the non-finite guard reads its flag."""

    def __init__(self, monkeypatch, every: int) -> None:
        self.every, self.windows, self.mode = every, 0, None
        self.counter = SyncCounter()
        for name in PYTHON_CONVERSIONS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.mode is not None:
                    self.counter.seen.append((f"Tensor.{_name}", _where()))
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step > 0 and step % self.every not in (0, self.every - 1):
            self.windows += 1
            self.mode = self.counter
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None


def fit_counting_syncs(tmp_path, monkeypatch, optimizer="adamw", precision="32-true", step_hook=None):
    """A tiny fit with every regularizer and the kNN bank on; the counter in place of the lr
    monitor (which reads lrs, Python floats, at logging steps only)."""
    monkeypatch.chdir(tmp_path)
    counter = CountHostSyncs(monkeypatch, every=5)
    monkeypatch.setattr("solo_ext.run.common.LearningRateMonitor", lambda **kwargs: counter)
    if step_hook is not None:
        monkeypatch.setattr(pl.LightningModule, "on_before_backward", step_hook, raising=False)
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"regularizers": ALL_REGULARIZERS},
        optimizer={"name": optimizer, "batch_size": 16, "lr": 1e-3, "classifier_lr": 1e-2},
        limit_train_batches=12,
        log_every_n_steps=5,
        precision=precision,
        knn_eval={"enabled": True, "bank": "batches"},
        checkpoint={"enabled": False, "dir": str(tmp_path / "tm")},
    )
    run_pretrain(OmegaConf.create(cfg))
    return counter


@pytest.mark.parametrize(
    "optimizer, precision", [("adamw", "32-true"), ("lars", "32-true"), ("adamw", "bf16-mixed")]
)
def test_no_host_sync_between_logging_steps(tmp_path, monkeypatch, optimizer, precision):
    counter = fit_counting_syncs(tmp_path, monkeypatch, optimizer, precision)
    assert counter.windows >= 6
    assert counter.counter.calls > 1000  # the mode saw the steps (forward, backward, optimizer)
    seen = counter.counter.seen
    assert not seen, f"{len(seen)} syncs; the first:\n" + "\n".join(f"{n}:\n{s}" for n, s in seen[:3])


# one synchronising statement of each kind, and the aten call (or Python conversion) it shows as
SYNCING_STATEMENTS = {
    "aten.index.Tensor": lambda loss: loss[loss > 0],
    "aten.index_put_.default": lambda loss: loss.clone().index_put_((loss > 0,), loss),
    "aten.masked_select.default": lambda loss: torch.masked_select(loss, loss > 0),
    "aten._unique2.default": lambda loss: loss.unique(),
    "aten.nonzero.default": lambda loss: torch.nonzero(loss),
    "aten._local_scalar_dense.default": lambda loss: bool(loss > 0),
    "aten._linalg_check_errors.default": lambda loss: torch.linalg.cholesky(torch.eye(2) * loss),
    "Tensor.tolist": lambda loss: loss.tolist(),
}


def test_a_sync_in_the_training_step_is_counted(tmp_path, monkeypatch):
    # the counter itself, shown failing: each synchronising statement, run in every training step
    # where its loss is at hand (before the backward), is seen at every counted step
    def hook(module, loss):
        for statement in SYNCING_STATEMENTS.values():
            statement(loss.detach().reshape(1))

    counter = fit_counting_syncs(tmp_path, monkeypatch, step_hook=hook)
    names = [name for name, _ in counter.counter.seen]
    assert counter.windows >= 6
    assert {op: names.count(op) >= counter.windows for op in SYNCING_STATEMENTS} == dict.fromkeys(
        SYNCING_STATEMENTS, True
    )
