"""A class subset (ImageNet-100) from a small fake ImageNet tree: the shipped class list, the
symlinked or copied subset the loaders read, resuming after an interruption, and one-line refusals
that leave nothing behind."""

import re
import subprocess
import sys
from distutils.core import run_setup  # setuptools' distutils (its distutils-precedence.pth)
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import solo_ext.data.subset as subset
from solo_ext.data.folders import class_folder_dataset
from solo_ext.data.subset import imagenet100_classes, make_subset, read_classes
from solo_ext.utils.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
EXTRA = ("n01440764", "n15075141")  # ImageNet-1k classes outside ImageNet-100
COUNTS = (("train", 2), ("val", 1))


def fake_imagenet(root: Path, classes, skip: dict | None = None) -> Path:
    """``root/{train,val}/<wnid>/<wnid>_<i>.JPEG``, one 8x8 JPEG per class and split (train two),
    leaving out ``skip[split]``'s classes."""
    rng = np.random.default_rng(0)
    for split, count in COUNTS:
        for wnid in classes:
            if wnid in (skip or {}).get(split, ()):
                continue
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


def command(*argv, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "solo_ext.data.subset", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def class_list(path: Path, classes) -> Path:
    path.write_text("# a subset\n" + "\n".join(classes) + "\n\n")
    return path


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_readable(out: Path, classes, copies: bool, imagenet: Path) -> None:
    """``out`` holds exactly ``classes`` in both splits, as links or copies of ``imagenet``'s,
    and the loaders read them with the right labels."""
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]  # no .partial left
    for split, count in COUNTS:
        entries = sorted((out / split).iterdir())
        assert [p.name for p in entries] == sorted(classes)
        for entry in entries:
            source = imagenet / split / entry.name
            if copies:
                assert not entry.is_symlink() and files_of(entry) == files_of(source)
            else:
                assert entry.is_symlink() and entry.readlink() == source
        samples = class_folder_dataset(out / split, f"data.{split}_path", "imagenet100")
        assert samples.classes == sorted(classes) and len(samples) == count * len(classes)
        assert all(
            Path(path).name.startswith(samples.classes[t]) for path, t in zip(samples.images, samples.targets)
        )


def test_the_class_list_ships_with_the_package(tmp_path):
    classes = imagenet100_classes()
    assert len(classes) == len(set(classes)) == 100
    assert all(re.fullmatch(r"n\d{8}", c) for c in classes)
    assert not set(EXTRA) & set(classes)
    assert read_classes("imagenet100") == classes
    assert read_classes(str(class_list(tmp_path / "mine.txt", EXTRA))) == list(EXTRA)
    dist = run_setup(str(ROOT / "setup.py"), stop_after="init")
    assert "imagenet100_classes.txt" in dist.package_data["solo_ext.data"]


def test_command_links_imagenet100_for_the_loaders(tmp_path):
    classes = imagenet100_classes()
    imagenet = fake_imagenet(tmp_path / "imagenet", [*classes, *EXTRA])
    out = tmp_path / "data" / "imagenet100"
    result = command("--classes", "imagenet100", "--src", imagenet, "--dst", out)
    assert result.returncode == 0, result.stderr
    assert "200 class folders made, 0 already there" in result.stdout
    assert_readable(out, classes, copies=False, imagenet=imagenet)
    # again: nothing left to do, nothing changed
    again = command("--classes", "imagenet100", "--src", imagenet, "--dst", out)
    assert again.returncode == 0 and "0 class folders made, 200 already there" in again.stdout
    assert_readable(out, classes, copies=False, imagenet=imagenet)


def test_command_copies_on_request(tmp_path):
    classes = ["n02", "n01", "n03"]
    imagenet = fake_imagenet(tmp_path / "imagenet", [*classes, "n04"])
    listed = class_list(tmp_path / "three.txt", classes)
    out = tmp_path / "three"
    result = command("--classes", listed, "--src", imagenet, "--dst", out, "--copy")
    assert result.returncode == 0, result.stderr
    assert "6 class folders made, 0 already there" in result.stdout
    assert_readable(out, classes, copies=True, imagenet=imagenet)


def test_an_interrupted_copy_completes_without_redoing_what_is_done(tmp_path, monkeypatch):
    classes = ["n01", "n02", "n03", "n04"]
    imagenet = fake_imagenet(tmp_path / "imagenet", classes)
    out = tmp_path / "out"
    real_copytree, calls = subset.shutil.copytree, []

    def interrupted(source, target):
        # the third class folder: one file copied, then the user presses Ctrl-C
        calls.append(source)
        if len(calls) < 3:
            return real_copytree(source, target)
        Path(target).mkdir()
        first = sorted(Path(source).iterdir())[0]
        (Path(target) / first.name).write_bytes(first.read_bytes()[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(subset.shutil, "copytree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_subset(classes, imagenet, out, copy=True)
    monkeypatch.setattr(subset.shutil, "copytree", real_copytree)
    done = sorted(p for p in (out / "train").iterdir())
    assert [p.name for p in done] == ["n01", "n02"]
    assert sorted(p.name for p in out.iterdir()) == [".partial", "train"]
    # what is done stays as it is: a file of the user's in a finished class is kept, none recopied
    (done[0] / "notes.txt").write_text("mine")
    inodes = {p: p.stat().st_ino for d in done for p in d.iterdir()}

    result = command(
        "--classes", class_list(tmp_path / "four.txt", classes), "--src", imagenet, "--dst", out, "--copy"
    )
    assert result.returncode == 0, result.stderr
    assert "6 class folders made, 2 already there" in result.stdout
    assert {p: p.stat().st_ino for p in inodes} == inodes
    (done[0] / "notes.txt").unlink()
    assert_readable(out, classes, copies=True, imagenet=imagenet)


def test_linking_resumes_beside_what_is_there(tmp_path):
    classes = ["n01", "n02", "n03"]
    imagenet = fake_imagenet(tmp_path / "imagenet", classes)
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "n02").symlink_to(imagenet / "train" / "n02")
    out, made = make_subset(classes, imagenet, out)
    assert made == 5
    assert_readable(out, classes, copies=False, imagenet=imagenet)


def test_a_missing_class_is_refused_in_one_line_before_anything_is_written(tmp_path):
    classes = imagenet100_classes()
    lacking = sorted(classes)[:7]
    imagenet = fake_imagenet(tmp_path / "imagenet", classes, skip={"val": lacking})
    out = tmp_path / "out"
    result = command("--classes", "imagenet100", "--src", imagenet, "--dst", out, "--copy")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"val/ lacks 7 of the 100 class folders: {', '.join(lacking[:5])}, ..." in result.stderr
    with pytest.raises(DataError, match=f"val/ lacks 1 of the 2 class folders: {lacking[3]} .ImageNet's val"):
        make_subset([classes[-1], lacking[3]], imagenet, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet"]


def test_other_refusals_name_the_flag_and_write_nothing(tmp_path):
    classes = ["n01", "n02"]
    imagenet = fake_imagenet(tmp_path / "imagenet", classes)
    elsewhere = fake_imagenet(tmp_path / "elsewhere", classes)
    taken = tmp_path / "taken"
    (taken / "val").mkdir(parents=True)
    (taken / "val" / "n02").symlink_to(elsewhere / "val" / "n02")
    (tmp_path / "file").write_text("")
    for source, target, message in (
        (tmp_path / "nowhere", tmp_path / "out", "--src='.*nowhere': no such folder$"),
        (imagenet / "train", tmp_path / "out", r"no train/ folder \(expected train/<class>/ per class\)$"),
        (imagenet, tmp_path / "file", "--dst='.*file': exists and is not a folder$"),
        (imagenet, taken, "--dst='.*taken': val/n02 is in the way .* remove it or choose another --dst$"),
    ):
        with pytest.raises(DataError, match=message):
            make_subset(classes, source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "file", "imagenet", "taken"]
    assert sorted(p.name for p in taken.iterdir()) == ["val"]
    for text, message in (
        ("n01\n../n02\n", r"line 2, '../n02', is not a class folder name$"),
        ("n01\n# no\nn01\n", r"line 3 repeats 'n01' \(line 1\)$"),
        ("# nothing\n\n", "lists no class"),
    ):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(DataError, match=f"^--classes='.*bad.txt': {message}"):
            read_classes(str(tmp_path / "bad.txt"))
    result = command("--classes", "imagenet1000", "--src", imagenet, "--dst", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert (
        "--classes='imagenet1000': must be imagenet100 or a text file of class folder names" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_the_imagenet100_recipes_say_how_to_make_their_data():
    recipes = sorted(ROOT.glob("scripts/*/imagenet-100/*.yaml"))
    assert len(recipes) == 7
    for recipe in recipes:
        text = recipe.read_text()
        made = re.search(
            r"python -m solo_ext\.data\.subset --classes imagenet100 --src \S+ --dst (\S+)\n", text
        )
        assert made, recipe
        read = re.search(r"\n  train_path: \"(.*)/train\"\n  val_path: \"(.*)/val\"\n", text)
        assert read and read.group(1) == read.group(2) == made.group(1), recipe
