"""bench/benchmark.py end to end on a tiny ViT: every row of its table is printed, with numbers.

Marked slow: the subprocess imports torch and Lightning afresh and runs 7 short fits (about 25 s
on an idle 2-core CPU, more on a loaded one).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "benchmark.py"
NUMBER = r"[0-9]+\.[0-9]+"
TRAIN_ROWS = [
    "bare PyTorch MAE loop",
    "Lightning MAE",
    "Lightning MAE + uniformity",
    "Lightning MAE + tcr",
    "Lightning MAE + magma",
    "Lightning MAE + all three",
]
OTHER_ROWS = [
    "loader digits (in memory)",
    "loader image_folder (512 PNG)",
    "model FLOPs per image",
    "matmul probe",
    "achieved fraction, bare PyTorch MAE loop",
    "achieved fraction, Lightning MAE",
]


@pytest.mark.slow
def test_tiny_benchmark_prints_every_row(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--steps", "2", "--warmup", "1", "--repeats", "1"]
    cmd += ["--loader-batches", "4", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    for row in TRAIN_ROWS:
        # name, images/s, ms/step (the ratio column is empty for the baseline)
        assert any(re.fullmatch(rf"{re.escape(row)}\s+{NUMBER}\s+{NUMBER}.*", line) for line in lines), row
    for row in OTHER_ROWS:
        assert any(re.fullmatch(rf"{re.escape(row)}\s+{NUMBER}.*", line) for line in lines), row

    results = json.loads(out.read_text())
    assert set(results["train"]) == set(TRAIN_ROWS)
    assert set(results["regularizer_cost"]) == set(TRAIN_ROWS[2:])
    assert results["flops_per_image"] > 0
    # ratios are the quotients of the reported step times
    train = results["train"]
    expected = train["Lightning MAE"]["ms_per_step"] / train["bare PyTorch MAE loop"]["ms_per_step"]
    assert results["plugin_overhead"] == pytest.approx(expected)


LOADER_ROWS = ["PIL (baseline)", "tensor / transforms.v2", "tensor + normalise on this CPU"]


@pytest.mark.slow
def test_loader_section_prints_every_back_end(tmp_path):
    out = tmp_path / "loaders.json"
    cmd = [sys.executable, str(SCRIPT), "--only-loaders", "--photos", "16", "--loader-batch-size", "4"]
    cmd += ["--repeats", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = json.loads(out.read_text())["loader_backends"]
    rows = list(LOADER_ROWS)
    if section["dali_installed"]:
        rows.append("DALI, CPU back-end")
    assert set(section["rows"]) == set(rows)
    assert section["images"] == 16
    lines = proc.stdout.splitlines()
    for row in rows:
        # name, images/s per core, ratio to PIL, and (for the back-ends themselves) the data-wait share
        assert any(
            re.fullmatch(rf"{re.escape(row)}\s+{NUMBER}\s+{NUMBER}(\s+[0-9]+%)?", line) for line in lines
        ), row
    pil = section["rows"]["PIL (baseline)"]["images_per_second_per_core"]
    for name in rows:
        row = section["rows"][name]
        assert row["vs_pil"] == pytest.approx(row["images_per_second_per_core"] / pil)
        if name != "tensor + normalise on this CPU":
            assert 0 < row["data_wait_share"] < 1
