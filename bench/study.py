"""The regularizer study on the digits (docs/results.md): MAE, U-MAE, M-MAE (TCR), MAGMA and
MU-MAE from the shipped digits recipes, each regularizer at three weights (x0.1, x1, x10 its
recipe value), several seeds, at equal budget (the recipes' 20 epochs); then per pretraining run
the fixed offline linear probe (scripts/linear/digits/linear.yaml) and offline kNN (main_knn.py,
the run's own protocol); then the report.

    python bench/study.py --out study/digits --seeds 0 1 2 3 4 --jobs 2

Every command is printed before it runs and appended to <out>/commands.txt. Pretraining runs
auto-resume (the recipes' auto_resume), so a stopped study continues where it was by running the
same command again; finished probes are skipped. The report goes to <out> and to --report-out.
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

# (recipe, the override key of its weight, the recipe's value); None: the recipe as it is
STUDY = (
    ("mae.yaml", None, None),
    ("u-mae.yaml", "method_kwargs.regularizers.uniformity.weight", 0.00125),
    ("tcr-mae.yaml", "method_kwargs.regularizers.tcr.weight", 0.00125),
    ("magma-mae.yaml", "method_kwargs.regularizers.magma.scheduler.weight", 1.0),
    ("mae-reg-uniformity.yaml", None, None),
)
FACTORS = (0.1, 1.0, 10.0)


def pretrain_commands(out: Path, seeds: list[int], overrides: list[str]) -> list[list[str]]:
    common = [f"checkpoint.dir={out}", "wandb.enabled=False", "++enable_progress_bar=False", *overrides]
    commands = []
    for recipe, key, value in STUDY:
        weights = [None] if key is None else [float(f"{value * f:.6g}") for f in FACTORS]
        for weight in weights:
            for seed in seeds:
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
    return [
        [
            sys.executable,
            "main_linear.py",
            "--config-name",
            "linear.yaml",
            f"pretrained_feature_extractor={run_dir}",
            f"checkpoint.dir={out}",
            "wandb.enabled=False",
            "++enable_progress_bar=False",
        ],
        [sys.executable, "main_knn.py", "--pretrained_checkpoint_dir", str(run_dir), "--num_workers", "0"],
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


def probed(out: Path) -> set[Path]:
    """Pretraining run folders that already have a finished linear probe."""
    done = set()
    for args_file in (out / "linear").glob("*/args.json"):
        if (args_file.parent / "results.json").is_file():
            source = json.loads(args_file.read_text()).get("pretrained_feature_extractor")
            if source:
                done.add(Path(source).resolve().parent)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("study/digits"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each with CPUs/jobs threads)")
    parser.add_argument("--report-out", type=Path, help="also write the report here (e.g. docs/results)")
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
    start = time.time()

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda c: run(c, log, threads), pretrain_commands(out, args.seeds, args.override)))
    pretrained = time.time()
    runs = sorted(p.parent for p in out.glob("mae*/*/results.json"))
    todo = [r for r in runs if r.resolve() not in probed(out)]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda r: [run(c, log, threads) for c in probe_commands(out, r)], todo))
    probes = time.time()

    report = [sys.executable, "-m", "solo_ext.report", str(out), "--baseline", "name=mae-digits"]
    run(report, log, threads)
    if args.report_out:
        run([*report, "--out", str(args.report_out.resolve())], log, threads)
    timing = {
        "pretraining_s": round(pretrained - start),
        "probes_s": round(probes - pretrained),
        "total_s": round(time.time() - start),
        "runs": len(runs),
        "jobs": args.jobs,
        "threads_per_job": threads,
    }
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    print(json.dumps(timing))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
