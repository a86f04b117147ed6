"""bench/gpu_check.py --smoke: the GPU check's code paths on the CPU with a tiny ViT, so the script
that is run when a GPU is lent cannot rot. Slow-marked: a fresh process compiles the tiny model."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
ROWS = [
    "MAE images/s, eager",
    "MAE images/s, torch.compile",
    "MFU eager / compiled",
    "step-time ratio + uniformity / MAE",
    "step-time ratio + tcr / MAE",
    "step-time ratio + magma / MAE",
    "all three regularizers",
    "at 16-mixed (GradScaler), all three regularizers",
    "data-wait share, real loader",
    "2-process DDP fit",
]


@pytest.mark.slow
def test_smoke_run_prints_every_row_and_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ROWS:
        assert row in result.stdout, row
    data = json.loads(out.read_text())
    assert data["smoke"] is True and data["batch_size"] == 8
    assert data["mae"]["eager"]["images_per_s"] > 0 and data["mae"]["compiled"]["images_per_s"] > 0
    assert data["mae"]["flops_per_image"] > 0
    assert set(data["regularizer_step_time_ratio"]) == {"uniformity", "tcr", "magma"}
    assert data["all_regularizers"]["finite"] is True
    fp16 = data["fp16"]
    assert fp16["finite"] is True and fp16["steps"] == data["all_regularizers"]["steps"]
    assert fp16["final_scale"] == 2.0**16 * 0.5 ** fp16["skipped_steps"]  # GradScaler's contract
    assert 0 <= data["loader"]["data_wait_share"] <= 1
    assert data["ddp"] is None  # no GPUs here
    assert elapsed < 180  # under a minute on an idle 2-core machine; slack for a loaded one
