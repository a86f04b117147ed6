"""``main_pretrain.py`` on an image folder with one bad image, read by data workers (the
image-folder default): exit code 2 and one line naming the file, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.tiny_images import CLASSES, FAULTS, SAYS, add_fault, class_value, write_image

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_main_pretrain_names_the_bad_image_from_a_worker(tmp_path, fault):
    train = tmp_path / "train"
    for k, name in enumerate(CLASSES):
        for i in range(4):
            write_image(train / name / f"{i}.png", class_value(k))
    bad = add_fault(train / "bee", fault)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SOLO_EXT_"))}
    args = [
        "--config-name",
        "mae.yaml",
        "data.dataset=custom",
        f"++data.train_path={train}",
        f"++data.val_path={train}",
        "data.num_workers=2",
        "max_epochs=1",
        "optimizer.batch_size=4",
        "backbone.kwargs.depth=1",
        f"checkpoint.dir={tmp_path / 'tm'}",
        "wandb.enabled=False",
        "++enable_progress_bar=False",
    ]
    proc = subprocess.run(
        [sys.executable, str(REPO / "main_pretrain.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]], proc.stderr[-3000:]
    assert errors[0].startswith(f"error: cannot decode image '{bad}': ") and SAYS[fault] in errors[0]
