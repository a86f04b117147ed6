"""``main_pretrain.py`` under torchrun with two node ranks on localhost, without SLURM: each node
rank is its own ``torchrun`` (a subprocess), as on two machines; Lightning reads the ranks from
torchrun's environment (``TorchElasticEnvironment``).

Every process is started from outside, so no parent hands the run id to the others: each rank
resolves it on its own, and they must still train one run in one folder, and agree again when the
same command is started a second time (auto-resume of the recipe).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.runs import args_json, main_command, run_dirs, tiny_overrides
from tests.cluster.slurm import clean_env, free_port

TIMEOUT_S = 420
RANK_LINE = "Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {member}/{world}"


def torchrun_two_nodes(cwd, args: list[str]) -> list[str]:
    """Both node ranks of ``torchrun --nnodes=2 --nproc-per-node=1`` at once; their outputs. Fails
    (after stopping the other) when one exits non-zero or runs past the timeout."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    port = free_port()
    procs = []
    for rank in (0, 1):
        cmd = [
            *launcher,
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={rank}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            *main_command(args)[1:],
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun still running after {TIMEOUT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node rank {rank} exited {proc.returncode}:\n{out[-6000:]}"
    return outputs


@pytest.mark.slow
def test_torchrun_two_node_ranks_train_one_run(tmp_path):
    launch = tmp_path / "launch"
    launch.mkdir()
    ckpt_dir = tmp_path / "tm"
    args = tiny_overrides(
        ckpt_dir, "devices=1", "++num_nodes=2", "strategy=ddp", "max_epochs=1", "++limit_train_batches=3"
    )
    outputs = torchrun_two_nodes(launch, args)
    log = "\n".join(outputs)
    runs = run_dirs(ckpt_dir)
    assert len(runs) == 1, (runs, log[-6000:])
    (run,) = runs
    derived = args_json(run)["derived"]
    assert (derived["world_size"], derived["global_batch_size"]) == (2, 32)
    for rank in (0, 1):
        assert RANK_LINE.format(rank=rank, member=rank + 1, world=2) in log, log[-6000:]
    assert list(run.glob("*-ep=0.ckpt")), sorted(p.name for p in run.iterdir())
    assert list(launch.iterdir()) == []

    # The same command again: both ranks find the finished run (auto-resume), none starts another.
    outputs = torchrun_two_nodes(launch, args)
    assert f"auto-resume: continuing run {run.name}" in outputs[0], outputs[0][-6000:]
    assert run_dirs(ckpt_dir) == [run]
    assert list(launch.iterdir()) == []
