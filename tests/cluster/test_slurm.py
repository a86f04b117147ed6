"""``main_pretrain.py`` under a real SLURM (the one-node cluster of tests/cluster/slurm.py): real
``sbatch``, ``srun``, ``scancel`` and SLURM's own requeue; the tiny digits model on the CPU.

Each job is submitted from its own empty launch directory, which must stay empty: a run writes only
into its run folder. Every failure message carries the job's output and the daemons' logs.

A run that misbehaves fails an assertion (AssertionError, also for timeouts); a cluster that
cannot start fails every test here under SOLO_EXT_REQUIRE_SLURM=1 (CI) and skips them otherwise.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from tests.cluster.runs import (
    STEP_METRIC,
    args_json,
    logged_steps,
    main_command,
    run_dirs,
    step_rows,
    tiny_overrides,
    write_job_script,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

JOB_TIMEOUT_S = 420  # one tiny run, two interpreters importing torch on shared CPUs
RANK_LINE = "Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {member}/{world}"


def launch_dir(tmp_path, name="launch"):
    path = tmp_path / name
    path.mkdir()
    return path


def fail(message: str):
    raise AssertionError(message)


def only(paths, what: str):
    paths = list(paths)
    assert len(paths) == 1, f"expected one {what}, found {[str(p) for p in paths]}"
    return paths[0]


def finished_ok(cluster, job, out, timeout=JOB_TIMEOUT_S):
    try:
        fields = cluster.wait(job, timeout)
    except TimeoutError as err:
        fail(f"{err}\n{cluster.logs(out)}")
    assert (fields.get("JobState"), fields.get("ExitCode")) == ("COMPLETED", "0:0"), (
        f"job {job}: {fields.get('JobState')} exit {fields.get('ExitCode')}\n{cluster.logs(out)}"
    )
    return fields


def test_srun_two_tasks_is_one_two_process_run(slurm_cluster, tmp_path):
    """``srun`` with 2 tasks on the node, ``devices=2 strategy=ddp`` (gloo): SLURM starts both
    processes, Lightning reads the ranks from SLURM, and they train one run into one folder."""
    ckpt_dir, launch, out = tmp_path / "tm", launch_dir(tmp_path), tmp_path / "job.out"
    line = main_command(
        tiny_overrides(ckpt_dir, "devices=2", "strategy=ddp", "max_epochs=1", "++limit_train_batches=3")
    )
    script = write_job_script(tmp_path / "job.sh", line, srun=True)
    job = slurm_cluster.sbatch(script, "--nodes=1", "--ntasks-per-node=2", f"--output={out}", cwd=launch)
    finished_ok(slurm_cluster, job, out)
    log = out.read_text()
    runs = run_dirs(ckpt_dir)
    assert len(runs) == 1, (runs, slurm_cluster.logs(out))
    assert args_json(runs[0])["derived"]["world_size"] == 2
    for rank in (0, 1):
        assert RANK_LINE.format(rank=rank, member=rank + 1, world=2) in log, slurm_cluster.logs(out)
    assert list(runs[0].glob("*-ep=0.ckpt")), sorted(p.name for p in runs[0].iterdir())
    assert list(launch.iterdir()) == []


def test_one_task_allocation_runs_the_devices_asked_for(slurm_cluster, tmp_path):
    """A one-task allocation (a sweep agent's job) asking ``devices=2 strategy=ddp``: the run
    starts the two processes itself, instead of running one and halving the global batch."""
    ckpt_dir, launch, out = tmp_path / "tm", launch_dir(tmp_path), tmp_path / "job.out"
    line = main_command(
        tiny_overrides(ckpt_dir, "devices=2", "strategy=ddp", "max_epochs=1", "++limit_train_batches=3")
    )
    script = write_job_script(tmp_path / "job.sh", line, exec_=True)
    job = slurm_cluster.sbatch(script, "--ntasks=1", f"--output={out}", cwd=launch)
    finished_ok(slurm_cluster, job, out)
    log = out.read_text()
    runs = run_dirs(ckpt_dir)
    assert len(runs) == 1, (runs, slurm_cluster.logs(out))
    derived = args_json(runs[0])["derived"]
    assert (derived["world_size"], derived["global_batch_size"]) == (2, 32), slurm_cluster.logs(out)
    for rank in (0, 1):
        assert RANK_LINE.format(rank=rank, member=rank + 1, world=2) in log, slurm_cluster.logs(out)
    assert list(launch.iterdir()) == []


# -- preemption ------------------------------------------------------------------------------------

EPOCH_STEPS = 40
PREEMPT_ARGS = (
    "max_epochs=2",
    f"++limit_train_batches={EPOCH_STEPS}",
    "++checkpoint.every_n_steps=5",
)
SBATCH_REQUEUE = ("--requeue", "--open-mode=append", "--nodes=1", "--ntasks-per-node=1")
REQUEUE_TIMEOUT_S = 420  # SLURM's begin-time delay after a requeue is about two minutes


def wait_for_steps(cluster, job, run_root, out, at_least, timeout=JOB_TIMEOUT_S):
    """Poll the run's csv log (every 50 ms) until ``at_least`` training steps are logged; the
    run folder. Fails at once if the job ends first."""
    deadline = time.monotonic() + timeout
    next_state_check = 0.0
    while time.monotonic() < deadline:
        for run in run_dirs(run_root):
            if len(logged_steps(run)) >= at_least:
                return run
        if time.monotonic() > next_state_check:
            fields = cluster.job(job)
            if fields.get("JobState") not in ("PENDING", "CONFIGURING", "RUNNING"):
                fail(
                    f"job {job} ended ({fields.get('JobState')} exit {fields.get('ExitCode')}) before "
                    f"logging {at_least} steps\n{cluster.logs(out)}"
                )
            next_state_check = time.monotonic() + 2
        time.sleep(0.05)
    fail(f"job {job}: fewer than {at_least} steps logged after {timeout} s\n{cluster.logs(out)}")


def test_preempted_job_requeues_and_resumes_mid_epoch_exactly(slurm_cluster, tmp_path):
    """SIGUSR1 mid-epoch (``scancel --batch --signal=USR1``: the script ``exec``s Python, so the
    batch step is the run itself; a plain ``scancel --signal=USR1`` reaches only ``srun`` steps):
    the run saves its exact state into its own folder and has SLURM requeue the job; the requeued
    job (same job id, SLURM_RESTART_COUNT=1) finds its run and finishes it with the weights of an
    uninterrupted run, no step logged twice, nothing written into the launch directory. An
    unrelated job started afterwards from the same directory starts its own run and restores
    nothing."""
    cluster = slurm_cluster
    ckpt_dir, launch = tmp_path / "tm", launch_dir(tmp_path)
    out = tmp_path / "preempted.out"
    script = write_job_script(
        tmp_path / "job.sh", main_command(tiny_overrides(ckpt_dir, *PREEMPT_ARGS)), exec_=True
    )
    job = cluster.sbatch(script, *SBATCH_REQUEUE, f"--output={out}", cwd=launch)
    # The same command, never interrupted, alongside (the node has room for both).
    ref_dir, ref_out = tmp_path / "ref", tmp_path / "reference.out"
    ref_script = write_job_script(
        tmp_path / "ref.sh", main_command(tiny_overrides(ref_dir, *PREEMPT_ARGS)), exec_=True
    )
    ref_job = cluster.sbatch(
        ref_script, *SBATCH_REQUEUE, f"--output={ref_out}", cwd=launch_dir(tmp_path, "ref-launch")
    )

    run = wait_for_steps(cluster, job, ckpt_dir, out, at_least=8)
    cluster.scancel(job, "--batch", "--signal=USR1")
    try:
        fields = cluster.wait(job, 120, until=lambda f: int(f.get("Restarts", 0) or 0) >= 1, poll=0.2)
    except TimeoutError as err:
        fail(f"not requeued after SIGUSR1: {err}\n{cluster.logs(out)}")
    first_attempt = logged_steps(run)
    # the job's identity is recorded (ids start at 41000 here: no other number of args.json)
    args_text = (run / "args.json").read_text()
    assert re.search(rf"(?<![\d.]){job}(?![\d.])", args_text), f"args.json lacks the job id {job}"
    # interrupted inside an epoch, after some steps, before the end
    assert 8 <= len(first_attempt) < 2 * EPOCH_STEPS, first_attempt
    assert len(first_attempt) % EPOCH_STEPS != 0, f"stopped at an epoch end: {first_attempt}"

    fields = finished_ok(cluster, job, out, timeout=REQUEUE_TIMEOUT_S)
    assert fields["Restarts"] == "1", fields
    finished_ok(cluster, ref_job, ref_out)

    assert run_dirs(ckpt_dir) == [run], run_dirs(ckpt_dir)
    ref_run = only(run_dirs(ref_dir), "reference run folder")
    rows, ref_rows = step_rows(run), step_rows(ref_run)
    steps = [int(row["step"]) for row in rows]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(steps)}"
    assert sorted(steps) == sorted(int(row["step"]) for row in ref_rows)
    # the same losses at every step (as text, exactly as the logger wrote them)
    assert {r["step"]: r[STEP_METRIC] for r in rows} == {r["step"]: r[STEP_METRIC] for r in ref_rows}

    final = only(run.glob("*-ep=1.ckpt"), "last checkpoint of the preempted run")
    ref_final = only(ref_run.glob("*-ep=1.ckpt"), "last checkpoint of the reference run")
    weights = torch.load(final, map_location="cpu", weights_only=False)["state_dict"]
    ref_weights = torch.load(ref_final, map_location="cpu", weights_only=False)["state_dict"]
    assert weights.keys() == ref_weights.keys()
    differ = [key for key in weights if not torch.equal(weights[key], ref_weights[key])]
    assert not differ, f"weights differ from the uninterrupted run: {differ}"
    assert list(launch.iterdir()) == [], "written into the launch directory"
    args_before = (run / "args.json").read_bytes()

    # An unrelated job from the same directory, into the same checkpoint.dir: another seed.
    other_out = tmp_path / "unrelated.out"
    other_script = write_job_script(
        tmp_path / "other.sh",
        main_command(tiny_overrides(ckpt_dir, "seed=6", "max_epochs=1", "++limit_train_batches=3")),
        exec_=True,
    )
    other = cluster.sbatch(other_script, *SBATCH_REQUEUE, f"--output={other_out}", cwd=launch)
    finished_ok(cluster, other, other_out)
    new_runs = [p for p in run_dirs(ckpt_dir) if p != run]
    assert len(new_runs) == 1, run_dirs(ckpt_dir)
    assert args_json(new_runs[0])["seed"] == 6
    text = other_out.read_text()
    assert "Restoring states" not in text and "auto-resume: continuing" not in text, text[-4000:]
    assert logged_steps(new_runs[0]) == [0, 1, 2], other_out.read_text()[-4000:]
    assert (run / "args.json").read_bytes() == args_before  # the preempted run is left alone
    assert list(launch.iterdir()) == []
