"""ImageNet-100 from a small fake ImageNet tree: the shipped class list, the symlinked subset the
loaders read, and one-line refusals that leave nothing behind."""

import re
import subprocess
import sys
from distutils.core import run_setup  # setuptools' distutils (its distutils-precedence.pth)
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from solo_ext.data.folders import class_folder_dataset
from solo_ext.data.imagenet100 import imagenet100_classes, make_imagenet100
from solo_ext.utils.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
EXTRA = ("n01440764", "n15075141")  # ImageNet-1k classes outside ImageNet-100


def fake_imagenet(root: Path, classes, skip: dict | None = None) -> Path:
    """``root/{train,val}/<wnid>/<wnid>_<i>.JPEG``, one 8x8 JPEG per class and split (train two),
    leaving out ``skip[split]``'s classes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for wnid in classes:
            if wnid in (skip or {}).get(split, ()):
                continue
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


def test_the_class_list_ships_with_the_package():
    classes = imagenet100_classes()
    assert len(classes) == len(set(classes)) == 100
    assert all(re.fullmatch(r"n\d{8}", c) for c in classes)
    assert not set(EXTRA) & set(classes)
    dist = run_setup(str(ROOT / "setup.py"), stop_after="init")
    assert "imagenet100_classes.txt" in dist.package_data["solo_ext.data"]


def test_command_makes_the_subset_the_loaders_read(tmp_path):
    classes = imagenet100_classes()
    imagenet = fake_imagenet(tmp_path / "imagenet", [*classes, *EXTRA])
    out = tmp_path / "data" / "imagenet-100"
    result = subprocess.run(
        [sys.executable, "-m", "solo_ext.data.imagenet100", "--imagenet", str(imagenet), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["imagenet-100"]  # no temporary left
    for split, count in (("train", 2), ("val", 1)):
        links = sorted((out / split).iterdir())
        assert [p.name for p in links] == sorted(classes)
        assert all(p.is_symlink() and p.readlink() == imagenet / split / p.name for p in links)
        samples = class_folder_dataset(out / split, f"data.{split}_path", "imagenet100")
        assert samples.classes == sorted(classes) and len(samples) == count * 100
        assert all(
            Path(path).name.startswith(samples.classes[t]) for path, t in zip(samples.images, samples.targets)
        )


def test_refusals_are_one_line_and_write_nothing(tmp_path):
    classes = imagenet100_classes()
    lacking = sorted(classes)[:7]
    imagenet = fake_imagenet(tmp_path / "imagenet", classes, skip={"val": lacking})
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "solo_ext.data.imagenet100", "--imagenet", str(imagenet), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"val/ lacks 7 of the 100 class folders: {', '.join(lacking[:5])}, ..." in result.stderr
    taken = tmp_path / "taken"
    (taken / "x").mkdir(parents=True)
    for source, target, message in (
        (tmp_path / "nowhere", out, "--imagenet='.*nowhere': no such folder$"),
        (imagenet / "train", out, r"no train/ folder \(expected train/<wnid>/ per class\)$"),
        (fake_imagenet(tmp_path / "full", classes), taken, "--out='.*taken': exists and is not an empty"),
    ):
        with pytest.raises(DataError, match=message):
            make_imagenet100(source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "imagenet", "taken"]
    assert [p.name for p in taken.iterdir()] == ["x"]
