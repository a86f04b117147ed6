"""python -m solo_ext.report: runs grouped over seeds, Student-t intervals, the paired baseline,
offline results joined to their pretraining run, and the four files."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from solo_ext.report import ReportError, make_report, t_half_width

ROOT = Path(__file__).resolve().parents[2]


def fake_run(root: Path, run_id: str, name: str, seed: int, weight, acc: float, rank: float) -> Path:
    run = root / "mae-reg" / run_id
    run.mkdir(parents=True)
    regs = {} if weight is None else {"uniformity": {"scheduler": {"name": "constant", "weight": weight}}}
    args = {
        "name": name,
        "method": "mae-reg",
        "seed": seed,
        "run_id": run_id,
        "method_kwargs": {"mask_ratio": 0.75, "regularizers": regs},
        "checkpoint": {"dir": str(root)},
        "derived": {"world_size": 1},
    }
    history = {"val_knn_acc1": [[0, 50.0], [1, acc - 1], [2, acc]], "val_effective_rank": [[2, rank]]}
    results = {
        "metrics": {"val_knn_acc1": {"final": acc}, "val_effective_rank": {"final": rank}},
        "history": history,
        "spectrum": [4.0, 2.0, 1.0, 0.5],
    }
    (run / "args.json").write_text(json.dumps(args))
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_t_interval_matches_scipy():
    values = [70.0, 72.5, 69.0, 71.0, 73.5]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    assert math.isclose(t_half_width(values), (high - low) / 2, rel_tol=1e-12)
    assert t_half_width([1.0]) is None


def test_groups_over_seeds_with_ci_and_paired_baseline(tmp_path):
    accs = {"mae": [60.0, 62.0, 61.0], "u-mae": [61.0, 64.0, 62.0]}
    for seed in range(3):
        fake_run(tmp_path, f"a{seed}", "mae", seed, None, accs["mae"][seed], 20.0 + seed)
        fake_run(tmp_path, f"b{seed}", "u-mae", seed, 0.01, accs["u-mae"][seed], 30.0)
    # a linear probe of one run joins that run
    probe = tmp_path / "linear" / "p0"
    probe.mkdir(parents=True)
    (probe / "args.json").write_text(
        json.dumps(
            {"method": "linear", "pretrained_feature_extractor": str(tmp_path / "mae-reg" / "a0" / "x.ckpt")}
        )
    )
    (probe / "results.json").write_text(json.dumps({"metrics": {"val_acc1": {"final": 80.0}}}))

    report = make_report([tmp_path], baseline="name=mae")
    lines = report.splitlines()
    header = lines[2].strip("|").split("|")
    # the weight follows from the name here, so only the name tells the groups apart
    assert [h.strip() for h in header[:3]] == ["name", "n", "seeds"]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[4:6]
    }
    knn = header.index(" online kNN acc1 ")
    assert rows["mae"][knn] == f"61.00 ± {t_half_width(accs['mae']):.2f}"
    assert rows["mae"][1] == "3" and rows["u-mae"][2] == "0,1,2"
    assert rows["mae"][header.index(" offline linear acc1 ")] == "80.00"  # n = 1: the value alone
    paired = [line for line in lines if line.startswith("| u-mae")][-1].strip("|").split("|")
    diffs = [b - a for a, b in zip(accs["mae"], accs["u-mae"])]
    assert paired[1].strip() == "3"  # pairs
    assert paired[3].strip() == f"{sum(diffs) / 3:.2f} ± {t_half_width(diffs):.2f}"  # Δ online kNN
    for name in ("report.md", "report.csv", "curves.png", "spectra.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_baseline_and_empty_folder_are_one_line_errors(tmp_path):
    fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    result = subprocess.run(
        [sys.executable, "-m", "solo_ext.report", str(tmp_path), "--baseline", "name=nothing"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --baseline=name=nothing: matches 0 groups")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "solo_ext.report", str(empty)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "no pretraining run" in result.stderr


@pytest.mark.slow
def test_two_multiruns_then_the_report(tmp_path):
    # the check the issue names: two recipes x two seeds by Hydra multirun, one row per recipe, n = 2
    quick = [
        "max_epochs=1",
        "++limit_train_batches=2",
        "++limit_val_batches=2",
        "++enable_progress_bar=False",
    ]
    for recipe in ("mae.yaml", "u-mae.yaml"):
        command = [sys.executable, str(ROOT / "main_pretrain.py"), "-m", "--config-name", recipe, "seed=0,1"]
        command += [f"checkpoint.dir={tmp_path / 'runs'}", "wandb.enabled=False", *quick]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").glob("*/*/results.json"))
    assert len(runs) == 4
    report = make_report([tmp_path / "runs"])
    rows = [
        line for line in report.splitlines() if line.startswith("| mae-digits") or line.startswith("| u-mae")
    ]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "2" and cells[2] == "0,1"
        assert "±" in row


def test_malformed_baseline_and_missing_folder(tmp_path):
    fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    with pytest.raises(ReportError, match=r"^--baseline='name': must be KEY=VALUE, e.g. name=mae-digits$"):
        make_report([tmp_path], baseline="name")
    with pytest.raises(ReportError, match=r"gone: no such folder$"):
        make_report([tmp_path, tmp_path / "gone"])
    assert not (tmp_path / "report.md").exists()
