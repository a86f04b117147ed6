"""The run's processes and precision are Lightning's reading of accelerator, devices, num_nodes,
strategy and precision; its refusals are one line naming the key, before anything is written."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_only

from solo_ext.config.errors import ConfigError
from solo_ext.config.lightning import lightning_devices
from solo_ext.config.pretrain import parse_cfg
from tests.methods.tiny import tiny_cfg

REPO = Path(__file__).resolve().parents[2]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


def parse(tmp_path, **top):
    return parse_cfg(tiny_cfg(tmp_path, **top))


@pytest.mark.parametrize(
    "top, world",
    [
        ({"devices": 1}, 1),
        ({"devices": 2, "strategy": "ddp"}, 2),
        ({"devices": "0,1", "strategy": "ddp"}, 2),
        ({"devices": 2, "num_nodes": 2}, 4),
        ({"devices": "auto"}, 1),
    ],
)
def test_world_size_is_lightnings(tmp_path, top, world):
    cfg = parse(tmp_path, **top)
    assert cfg.derived.world_size == world
    flags = {key: cfg[key] for key in ("accelerator", "num_nodes", "strategy")}
    trainer = Trainer(devices=lightning_devices("cpu", cfg.devices), logger=False, **flags)
    assert trainer.world_size == world


def test_a_ddp_child_process_resolves_the_same_world_size(tmp_path, monkeypatch):
    # what Lightning's subprocess launcher sets in the process it starts for local rank 1
    env = {"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": "29512"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # Lightning sets it per process
    assert parse(tmp_path, devices=2, strategy="ddp").derived.world_size == 2


@pytest.mark.parametrize(
    "precision, resolved", [(32, "32-true"), ("32", "32-true"), (64, "64-true"), ("bf16", "bf16-mixed")]
)
def test_precision_aliases_are_resolved_and_written(tmp_path, precision, resolved):
    cfg = parse(tmp_path, precision=precision)
    assert cfg.precision == resolved and cfg.derived.precision == resolved


def test_resolving_prints_nothing(tmp_path, capfd):
    parse(tmp_path, devices=2, strategy="ddp")
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    "top, line",
    [
        (
            {"precision": "16-mixed"},
            "precision='16-mixed': Lightning would run it as 'bf16-mixed' on the cpu; "
            "set precision=bf16-mixed (or 32-true)",
        ),
        (
            {"devices": "a,b"},
            "devices='a,b': `devices` selected with `CPUAccelerator` should be an int > 0.",
        ),
        ({"strategy": "fsdp"}, "strategy='fsdp': The strategy `fsdp` requires a GPU accelerator"),
        ({"accelerator": "abacus"}, "accelerator='abacus': You selected an invalid accelerator name"),
    ],
)
def test_lightnings_refusal_is_one_line_naming_the_key(tmp_path, top, line):
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, **top)
    text = str(err.value)
    assert text.startswith(line) and "\n" not in text and len(text) <= 200, text


@no_cuda
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_a_gpu_is_refused(tmp_path, accelerator):
    with pytest.raises(ConfigError, match=rf"^accelerator='{accelerator}': .*\(available here: cpu\)$"):
        parse(tmp_path, accelerator=accelerator)


SLURM_JOB = {"SLURM_JOB_ID": "17", "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "n1", "SLURM_NNODES": "1"}


def slurm_env(monkeypatch, **extra):
    """The variables SLURM sets in a job's tasks (what Lightning's SLURMEnvironment reads)."""
    env = {**SLURM_JOB, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", **extra}
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_a_one_task_slurm_allocation_starts_the_devices_asked_for(tmp_path, monkeypatch):
    # a sweep agent's job (sbatch --ntasks=1): Lightning alone would run one process, silently
    slurm_env(monkeypatch, SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1")
    assert parse(tmp_path, devices=2, strategy="ddp").derived.world_size == 2


def test_slurm_tasks_per_node_run_as_ddp_processes(tmp_path, monkeypatch):
    slurm_env(monkeypatch, SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2")
    assert parse(tmp_path, devices=2, strategy="ddp").derived.world_size == 2


@pytest.mark.parametrize(
    "extra, top, line",
    [
        (
            {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4"},
            {"devices": 2, "strategy": "ddp"},
            "devices=2: SLURM starts 4 tasks per node (--ntasks-per-node=4); set devices=4",
        ),
        (
            {"SLURM_NTASKS": "2"},
            {"devices": 2, "strategy": "ddp"},
            "devices=2: this SLURM job has 2 tasks (--ntasks=2) but no --ntasks-per-node",
        ),
        (
            {"SLURM_NTASKS": "1"},
            {"devices": 1, "num_nodes": 2},
            "num_nodes=2: this SLURM job has one task, which runs on one node",
        ),
    ],
)
def test_slurm_settings_that_disagree_with_devices_are_one_line(tmp_path, monkeypatch, extra, top, line):
    slurm_env(monkeypatch, **extra)
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, **top)
    assert str(err.value).startswith(line) and "\n" not in str(err.value), str(err.value)
