"""python -m solo_ext.report: runs grouped over seeds, Student-t intervals, the paired baseline,
offline results joined to their pretraining run, and the four files."""

import json
import math
import os
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
    # n = 1: the value alone, and (n=1) since the two other seeds have no offline probe
    assert rows["mae"][header.index(" offline linear acc1 (L1) ")] == "80.00 (n=1)"
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


LEFT_OUT = "run left out of the report"


def test_a_run_with_a_bad_file_is_left_out_with_a_warning(tmp_path, capsys):
    for seed in range(3):
        fake_run(tmp_path, f"a{seed}", "mae", seed, None, 60.0 + seed, 20.0)
    cut = tmp_path / "mae-reg" / "a1" / "results.json"
    cut.write_text(cut.read_text()[:25])  # a write cut short
    not_object = tmp_path / "mae-reg" / "a2" / "args.json"
    not_object.write_text("[]")
    report = make_report([tmp_path])
    assert report.startswith("1 runs in 1 groups")
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"WARNING: {cut} is not valid JSON (Unterminated string")
    assert warnings[1] == f"WARNING: {not_object} holds a JSON list, not an object; {LEFT_OUT}"
    assert warnings[0].endswith(LEFT_OUT)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_report_files_get_the_usual_permissions(tmp_path, umask):
    fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    previous = os.umask(umask)
    try:
        make_report([tmp_path], out=tmp_path / "out")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    names = ["curves.png", "report.csv", "report.md", "spectra.png"]
    assert modes == {name: 0o666 & ~umask for name in names}


def test_a_finishing_run_replaces_an_unreadable_results_json(tmp_path, capsys):
    from solo_ext.results import merge_results, write_results

    results = tmp_path / "results.json"
    results.write_text('{"offline_knn": ')
    assert merge_results(tmp_path, "offline_knn", {"best": 1}) is None  # another tool's: left alone
    assert results.read_text() == '{"offline_knn": '
    write_results(tmp_path, {"metrics": {}})  # the run's own: replaced
    assert json.loads(results.read_text()) == {"metrics": {}}
    warnings = capsys.readouterr().err.splitlines()
    assert [w.rpartition("; ")[2] for w in warnings] == [
        "left as it is, offline_knn not added",
        "replaced by this run's results",
    ]
    assert all(w.startswith(f"WARNING: {results} is not valid JSON") for w in warnings)


def linear_run(root: Path, run_id: str, source: Path, protocol: str, acc: float, random_acc=None) -> Path:
    """An offline linear evaluation of ``source``'s checkpoint, as main_linear.py leaves it."""
    run = root / "linear" / run_id
    run.mkdir(parents=True)
    args = {"method": "linear", "pretrained_feature_extractor": str(source / "x.ckpt")}
    results = {
        "metrics": {"val_acc1": {"final": acc}},
        "protocols": {"linear": protocol},
        "run_dir": str(run),
    }
    if random_acc is not None:
        results["random_backbone"] = {"val_acc1": random_acc}
    (run / "args.json").write_text(json.dumps(args))
    (run / "results.json").write_text(json.dumps(results))
    return run


def table_cells(report: str) -> dict[str, str]:
    """The first row of the main table (one group: no name column), by column title."""
    lines = report.splitlines()
    header = [h.strip() for h in lines[2].strip("|").split("|")]
    return dict(zip(header, [c.strip() for c in lines[4].strip("|").split("|")]))


def test_a_seed_twice_in_a_group_is_refused_naming_the_runs(tmp_path):
    fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    fake_run(tmp_path, "a1", "mae", 1, None, 61.0, 20.0)
    fake_run(tmp_path, "again", "mae", 0, None, 62.0, 20.0)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ReportError) as info:
        make_report([tmp_path])
    message = str(info.value)
    assert "\n" not in message and message.startswith("seed 0 appears 2 times in the group")
    assert str(tmp_path / "mae-reg" / "a0") in message and str(tmp_path / "mae-reg" / "again") in message
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_n_per_metric_when_values_are_missing_or_not_finite(tmp_path):
    fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    fake_run(tmp_path, "a1", "mae", 1, None, 62.0, float("nan"))
    fake_run(tmp_path, "a2", "mae", 2, None, 64.0, 22.0)
    cells = table_cells(make_report([tmp_path]))
    assert cells["online kNN acc1"] == f"62.00 ± {t_half_width([60.0, 62.0, 64.0]):.2f}"  # all 3: no n
    assert cells["effective rank"] == f"21.00 ± {t_half_width([20.0, 22.0]):.2f} (n=2)"


def knn_measured_run(tmp_path: Path, rows: list[tuple], best: int) -> Path:
    """A mean-feature run (k 20, T 0.07, cosine) with main_knn.py's table of ``rows``
    ((feature_type, k, T, acc1), ...) and its best row at index ``best``."""
    run = fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    args = json.loads((run / "args.json").read_text())
    args["knn_eval"] = {"k": 20, "T": 0.07, "distance_func": "cosine"}
    args["method_kwargs"]["online_features"] = "mean"
    (run / "args.json").write_text(json.dumps(args))
    table = [{"feature_type": f, "distance": "cosine", "k": k, "T": T, "acc1": acc} for f, k, T, acc in rows]
    results = json.loads((run / "results.json").read_text())
    results["offline_knn"] = {"rows": table, "best": table[best]}
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_offline_knn_is_the_runs_own_protocol_row_unless_asked(tmp_path):
    rows = [
        ("mean", 10, 0.07, 75.0),
        ("mean", 20, 0.07, 70.0),
        ("mean", 20, 0.2, 80.0),
        ("mean", 50, 0.07, 72.0),
    ]
    knn_measured_run(tmp_path, rows, best=2)
    report = make_report([tmp_path])
    assert table_cells(report)["offline kNN acc1"] == "70.00"
    assert "Offline kNN: the run's own protocol." in report
    assert table_cells(make_report([tmp_path], knn_row="best"))["offline kNN acc1"] == "80.00"
    with pytest.raises(ReportError, match=r"^--knn-row='top': must be one of own, best$"):
        make_report([tmp_path], knn_row="top")


def test_every_probe_of_a_checkpoint_is_kept_apart_by_protocol(tmp_path):
    run = fake_run(tmp_path, "a0", "mae", 0, None, 60.0, 20.0)
    probe = "probe on frozen mean features of clean training images: ..."
    mae_probe = "linear on mean features, BatchNorm (no affine) + linear head"
    linear_run(tmp_path, "p0", run, probe, 85.0, random_acc=40.0)
    linear_run(tmp_path, "p1", run, mae_probe, 81.0)
    report = make_report([tmp_path])
    legend = {line[2:4]: line[6:] for line in report.splitlines() if line.startswith("- L")}
    number = {protocol: label for label, protocol in legend.items()}
    cells = table_cells(report)
    assert cells[f"offline linear acc1 ({number[probe]})"] == "85.00"
    assert cells[f"offline linear acc1 ({number[mae_probe]})"] == "81.00"
    assert cells[f"random-backbone acc1 ({number[probe]})"] == "40.00"


def test_offline_knn_and_probes_on_both_feature_kinds_get_a_column_each(tmp_path):
    """A run measured on cls and mean features (main_knn.py --feature_type cls mean, a probe per
    kind) is reported on both: the run's own k, T and distance on each kind, the probe's effective
    rank beside its accuracy, and the probe curves drawn."""
    rows = [
        ("mean", 20, 0.07, 70.0),
        ("mean", 10, 0.07, 90.0),
        ("cls", 20, 0.07, 55.0),
        ("cls", 10, 0.07, 95.0),
    ]
    run = knn_measured_run(tmp_path, rows, best=3)
    for kind, acc, rank in (("cls", 81.0, 30.0), ("mean", 84.0, 40.0)):
        probe = linear_run(tmp_path, f"p-{kind}", run, f"probe on frozen {kind} features", acc)
        stored = json.loads((probe / "results.json").read_text())
        stored["metrics"]["val_effective_rank"] = {"final": rank}
        stored["probe"] = {
            "curve": [{"epoch": 1, "holdout_acc1": acc - 20}, {"epoch": 2, "holdout_acc1": acc}]
        }
        (probe / "results.json").write_text(json.dumps(stored))
    report = make_report([tmp_path])
    cells = table_cells(report)
    assert (cells["offline kNN acc1 (cls)"], cells["offline kNN acc1 (mean)"]) == ("55.00", "70.00")
    assert "offline kNN acc1" not in cells
    assert "one column per feature kind measured" in report
    legend = {line[6:]: line[2:4] for line in report.splitlines() if line.startswith("- L")}
    cls, mean = legend["probe on frozen cls features"], legend["probe on frozen mean features"]
    assert (cells[f"offline linear acc1 ({cls})"], cells[f"offline linear acc1 ({mean})"]) == (
        "81.00",
        "84.00",
    )
    assert cells[f"probed features' effective rank ({mean})"] == "40.00"
    assert (tmp_path / "probe_curves.png").stat().st_size > 0
