"""The regularizer study on the digits (docs/results.md): MAE, U-MAE, M-MAE (TCR), MAGMA and
MU-MAE from the shipped digits recipes (U-MAE and TCR on a log grid of weights up to 1, MAGMA at
x0.1, x1, x10 its recipe value), several seeds, at equal budget (the recipes' 20 epochs); then per
pretraining run the cached-feature probe (scripts/linear/digits/linear.yaml) and offline kNN
(main_knn.py, the run's own k, T and distance), each on cls and on mean features; then the report.

    python bench/study.py --out study/digits-equal --seeds 0 1 2 3 4 --jobs 2 --report-out docs/results

Every command is printed before it runs and appended to <out>/commands.txt. Pretraining runs
auto-resume (the recipes' auto_resume), so a stopped study continues where it was by running the
same command again; finished evaluations are skipped; --phases runs a part of it. The report goes
to <out> and to --report-out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "scripts" / "pretrain" / "digits"

# (recipe, the override key of its weight, {weight: number of seeds}); None: the recipe as it is.
# U-MAE and TCR on a log grid up to weight 1 (the new points 0.125 and 1.0 with three seeds),
# MAGMA at x0.1, x1, x10 its recipe value; everything else with every seed given.
STUDY: tuple[tuple[str, str | None, dict[float, int | None]], ...] = (
    ("mae.yaml", None, {}),
    (
        "u-mae.yaml",
        "method_kwargs.regularizers.uniformity.weight",
        {0.000125: None, 0.00125: None, 0.0125: None, 0.125: 3, 1.0: 3},
    ),
    (
        "tcr-mae.yaml",
        "method_kwargs.regularizers.tcr.weight",
        {0.000125: None, 0.00125: None, 0.0125: None, 0.125: 3, 1.0: 3},
    ),
    (
        "magma-mae.yaml",
        "method_kwargs.regularizers.magma.scheduler.weight",
        {0.1: None, 1.0: None, 10.0: None},
    ),
    ("mae-reg-uniformity.yaml", None, {}),
)
# every checkpoint is probed and its kNN measured on both feature kinds; the report keeps them apart
FEATURES = ("cls", "mean")
RANDOM_BACKBONE = [
    "++allow_random_backbone=True",
    "++backbone.name=vit_tiny",
    "++backbone.kwargs={img_size: 32, patch_size: 8, embed_dim: 128, depth: 6, num_heads: 4}",
]


def pretrain_commands(out: Path, seeds: list[int], overrides: list[str]) -> list[list[str]]:
    """Seed-major, so that a study stopped early has whole seeds of every group."""
    common = [f"checkpoint.dir={out}", "wandb.enabled=False", "++enable_progress_bar=False", *overrides]
    commands = []
    for i, seed in enumerate(seeds):
        for recipe, key, weights in STUDY:
            for weight, n_seeds in weights.items() or [(None, None)]:
                if n_seeds is not None and i >= n_seeds:
                    continue
                extra = [] if key is None else [f"{key}={weight}"]
                commands.append(
                    [
                        sys.executable,
                        "main_pretrain.py",
                        "--config-name",
                        recipe,
                        f"seed={seed}",
                        *extra,
                        *common,
                    ]
                )
    return commands


def probe_commands(out: Path, run_dir: Path) -> list[list[str]]:
    """The cached-feature probe (scripts/linear/digits/linear.yaml) on each feature kind, without
    its random-backbone baseline (measured once per kind, see random_commands), and main_knn.py on
    both kinds with the run's own k, T and distance."""
    common = [f"checkpoint.dir={out}", "wandb.enabled=False", "++enable_progress_bar=False"]
    probes = [
        [
            sys.executable,
            "main_linear.py",
            "--config-name",
            "linear.yaml",
            f"pretrained_feature_extractor={run_dir}",
            f"++features={f}",
            "probe.random_baseline=False",
            *common,
        ]
        for f in FEATURES
    ]
    knn = [
        sys.executable,
        "main_knn.py",
        "--pretrained_checkpoint_dir",
        str(run_dir),
        "--feature_type",
        *FEATURES,
        "--num_workers",
        "0",
    ]
    return [*probes, knn]


def random_commands(out: Path) -> list[list[str]]:
    """The probe of a randomly initialised backbone of the digits ViT, once per feature kind."""
    return [
        [
            sys.executable,
            "main_linear.py",
            "--config-name",
            "linear.yaml",
            *RANDOM_BACKBONE,
            f"++features={f}",
            f"checkpoint.dir={out / 'random'}",
            "wandb.enabled=False",
            "++enable_progress_bar=False",
        ]
        for f in FEATURES
    ]


def run(command: list[str], log: Path, threads: int) -> None:
    line = " ".join(shlex.quote(c) for c in command)
    print(f"+ {line}", flush=True)
    with open(log.parent / "commands.txt", "a") as f:
        f.write(line + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "a") as f:
        result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}), see {log}: {line}")


def probed(out: Path) -> set[tuple[Path, str]]:
    """(pretraining run folder, feature kind) pairs that already have a finished probe."""
    done = set()
    for args_file in (out / "linear").glob("*/args.json"):
        if (args_file.parent / "results.json").is_file():
            args = json.loads(args_file.read_text())
            source = args.get("pretrained_feature_extractor")
            if source:
                done.add((Path(source).resolve().parent, str(args.get("features"))))
    return done


def knn_measured(run_dir: Path) -> bool:
    """main_knn.py has written its table on both feature kinds into the run's results.json."""
    results = json.loads((run_dir / "results.json").read_text())
    rows = (results.get("offline_knn") or {}).get("rows") or []
    return set(FEATURES) <= {row.get("feature_type") for row in rows}


def evaluation_commands(out: Path, run_dir: Path) -> list[list[str]]:
    """What is still to run of a pretraining run's evaluation (a stopped study skips the rest)."""
    done = probed(out)
    *probes, knn = probe_commands(out, run_dir)
    todo = [c for c, f in zip(probes, FEATURES) if (run_dir.resolve(), f) not in done]
    return todo if knn_measured(run_dir) else [*todo, knn]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("study/digits-equal"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each with CPUs/jobs threads)")
    parser.add_argument("--report-out", type=Path, help="also write the report here (e.g. docs/results)")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=("pretrain", "evaluate", "report"),
        default=["pretrain", "evaluate", "report"],
        help="what to run (each phase skips what is already done)",
    )
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra pretraining overrides (a quick smoke run: max_epochs=1)",
    )
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "study.log"
    threads = max(1, len(os.sched_getaffinity(0)) // args.jobs)
    timing_file = out / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}

    def timed(phase: str, commands: list[list[list[str]]]) -> None:
        """Run each group of commands in order, the groups ``args.jobs`` at a time."""
        start = time.time()
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda group: [run(c, log, threads) for c in group], commands))
        timing[f"{phase}_s"] = timing.get(f"{phase}_s", 0) + round(time.time() - start)
        timing_file.write_text(
            json.dumps({**timing, "jobs": args.jobs, "threads_per_job": threads}, indent=2)
        )

    if "pretrain" in args.phases:
        timed("pretraining", [[c] for c in pretrain_commands(out, args.seeds, args.override)])
    if "evaluate" in args.phases:
        runs = sorted(p.parent for p in out.glob("mae*/*/results.json"))
        groups = [evaluation_commands(out, r) for r in runs]
        if not (out / "random").is_dir():
            groups.append(random_commands(out))
        timed("evaluation", [g for g in groups if g])
    if "report" in args.phases:
        report = [sys.executable, "-m", "solo_ext.report", str(out), "--baseline", "name=mae-digits"]
        run(report, log, threads)
        if args.report_out:
            run([*report, "--out", str(args.report_out.resolve())], log, threads)
        print((out / "report.md").read_text())
        for results_file in sorted((out / "random").glob("linear/*/results.json")):
            results = json.loads(results_file.read_text())
            protocol = results["metrics"]["val_acc1"]["protocol"]
            print(f"random backbone: val_acc1 {results['metrics']['val_acc1']['final']:.2f} [{protocol}]")
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
