"""2 gloo processes see every image exactly once per epoch, in the same number of steps, with the
default (tensor) loader and with DALI's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_epoch.py")
NUM_IMAGES, STEPS, BATCH = 24, 3, 4


@pytest.mark.slow
@pytest.mark.parametrize("data_format", ["image_folder", pytest.param("dali", marks=pytest.mark.dali)])
def test_every_image_once_per_epoch_on_two_ranks(tmp_path, data_format):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--format", data_format, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    orders = []
    for epoch in ("0", "1"):
        batches = [rank[epoch] for rank in ranks]
        assert [len(b) for b in batches] == [STEPS, STEPS]  # equal steps per rank
        assert all(len(batch) == BATCH for rank in batches for batch in rank)
        seen = sorted(i for rank in batches for batch in rank for i in batch)
        assert seen == list(range(NUM_IMAGES)), seen  # every image exactly once
        orders.append([i for rank in batches for batch in rank for i in batch])
    assert orders[0] != orders[1]  # reshuffled per epoch
