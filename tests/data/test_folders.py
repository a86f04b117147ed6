"""Image folders made of links (as an ImageNet-100 subset is) are walked safely: every link is
followed, each real file is counted once, cycles are cut by real path and labels never cross
classes. Real symlinks in tmp_path."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from tiny_images import CLASSES, IMAGES_PER_CLASS, class_value, write_image

from solo_ext.data.folders import class_folder_dataset, flat_folder_dataset


def grey(image) -> int:
    return image.getpixel((0, 0))[0]


def assert_labels_from_own_folder(ds) -> None:
    """Every sample's pixels say the class its target names (solid images, one grey per class)."""
    for i in range(len(ds)):
        image, target = ds[i]
        assert grey(image) == class_value(target), ds.images[i]


def test_links_to_class_folders_and_to_files_are_followed(tmp_path):
    store = tmp_path / "imagenet" / "train"
    for k, name in enumerate(CLASSES):
        for i in range(IMAGES_PER_CLASS):
            write_image(store / name / f"{i}.png", class_value(k))
    subset = tmp_path / "subset" / "train"
    subset.mkdir(parents=True)
    (subset / "ant").symlink_to(store / "ant", target_is_directory=True)  # a folder link
    (subset / "bee").mkdir()
    for i in range(IMAGES_PER_CLASS):  # file links, relative as `ln -s ../../..` makes them
        (subset / "bee" / f"{i}.png").symlink_to(os.path.relpath(store / "bee" / f"{i}.png", subset / "bee"))
    for i in range(IMAGES_PER_CLASS):  # and plain files
        write_image(subset / "cat" / f"{i}.png", class_value(2))
    write_image(tmp_path / "more-cats" / "x.png", class_value(2))
    (subset / "cat" / "more").symlink_to(tmp_path / "more-cats", target_is_directory=True)  # inside a class

    ds = class_folder_dataset(subset, "data.train_path", "custom")
    assert Counter(ds.targets) == {0: IMAGES_PER_CLASS, 1: IMAGES_PER_CLASS, 2: IMAGES_PER_CLASS + 1}
    assert_labels_from_own_folder(ds)


def test_a_loop_is_cut_and_pulls_no_other_class_in(image_folder, capsys):
    (image_folder / "ant" / "loop").symlink_to("..", target_is_directory=True)  # -> the root
    (image_folder / "bee" / "self").symlink_to(".", target_is_directory=True)
    (image_folder / "cat" / "deep" / "er").mkdir(parents=True)
    (image_folder / "cat" / "deep" / "er" / "up").symlink_to("../..", target_is_directory=True)
    (image_folder / "cat" / "deep" / "er" / "back").symlink_to("..", target_is_directory=True)

    ds = class_folder_dataset(image_folder, "data.train_path", "custom")
    assert Counter(ds.targets) == {0: IMAGES_PER_CLASS, 1: IMAGES_PER_CLASS, 2: IMAGES_PER_CLASS}
    assert_labels_from_own_folder(ds)
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith("WARNING: data.train_path: 4 link(s) not followed") and "loop" in warning


def test_each_real_file_once_and_never_in_another_class(image_folder, capsys):
    ant, bee = image_folder / "ant", image_folder / "bee"
    (ant / "again.png").symlink_to("0.png")  # the same file twice in its class
    write_image(ant / "more" / "x.png", class_value(0))
    (ant / "more-again").symlink_to("more", target_is_directory=True)  # the same folder twice
    (ant / "stolen.png").symlink_to(bee / "0.png")  # a file of another class
    (ant / "bees").symlink_to(bee, target_is_directory=True)  # another class's folder
    outside = write_image(image_folder.parent / "outside" / "y.png", class_value(1))
    (bee / "y.png").symlink_to(outside)  # outside every class: taken once, by the first class
    (image_folder / "cat" / "y.png").symlink_to(outside)

    ds = class_folder_dataset(image_folder, "data.train_path", "custom")
    counts = Counter(ds.targets)
    assert counts == {0: IMAGES_PER_CLASS + 1, 1: IMAGES_PER_CLASS + 1, 2: IMAGES_PER_CLASS}, counts
    assert len({os.path.realpath(p) for p in ds.images}) == len(ds)
    assert_labels_from_own_folder(ds)
    assert bee / "0.png" in ds.images and ant / "stolen.png" not in ds.images
    # more-again (walked already), stolen.png and bees (another class); y.png is a file taken once
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith("WARNING: data.train_path: 3 link(s) not followed")


def test_flat_folder_walks_links_once(tmp_path):
    root = tmp_path / "flat"
    for i in range(3):
        write_image(root / "sub" / f"{i}.png", 7)
    (root / "sub" / "loop").symlink_to("..", target_is_directory=True)
    (root / "alias").symlink_to("sub", target_is_directory=True)
    ds = flat_folder_dataset(root, "data.train_path", "custom")
    assert sorted(Path(p).name for p in ds.images) == ["0.png", "1.png", "2.png"]
    assert ds.targets == [-1, -1, -1]


# ----------------------------------------------------------------------------- one walk per run
def pretrain_cfg(tmp_path, train, val, bank: str, data_format: str = "image_folder"):
    from solo_ext.config.pretrain import parse_cfg
    from tests.methods.tiny import tiny_cfg

    data = {"dataset": "custom", "train_path": str(train), "val_path": str(val), "format": data_format}
    cfg = tiny_cfg(tmp_path, method="mae", knn_eval={"enabled": True, "bank": bank}, data=data)
    cfg["data"]["num_workers"] = 0
    cfg["optimizer"]["batch_size"] = 4
    return parse_cfg(cfg)


@pytest.mark.parametrize("bank", ["clean", "batches"])
def test_a_run_lists_each_folder_once(image_folder, tmp_path, monkeypatch, bank):
    """The pretraining set, the val set's classes and the clean kNN bank share one listing of the
    train folder: a spy on the OS counts every directory listing of the run's data."""
    from solo_ext.run.pretrain import build_pretrain_loaders

    val = tmp_path / "val"
    for k, name in enumerate(CLASSES):
        write_image(val / name / "0.png", class_value(k))
    cfg = pretrain_cfg(tmp_path, image_folder, val, bank)  # (the config layer counts the classes)
    listed = Counter()
    scandir = os.scandir

    def counting_scandir(path):
        listed[os.path.realpath(path)] += 1
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    _, val_loaders = build_pretrain_loaders(cfg)
    assert len(val_loaders) == (2 if bank == "clean" else 1)
    folders = [root / name for root in (image_folder, val) for name in ("", *CLASSES)]
    assert listed == {os.path.realpath(folder): 1 for folder in folders}


def test_the_clean_set_is_built_only_when_asked(image_folder, tmp_path, monkeypatch):
    """With the kNN bank on training batches, no second train set: in memory
    (ram_image_folder), each training image is read once."""
    import builtins

    from solo_ext.run.pretrain import build_pretrain_loaders

    cfg = pretrain_cfg(tmp_path, image_folder, image_folder, "batches", data_format="ram_image_folder")
    reads = Counter()
    open_ = builtins.open

    def counting_open(file, *args, **kwargs):
        reads[str(file)] += 1
        return open_(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    build_pretrain_loaders(cfg)
    train_images = [str(p) for name in CLASSES for p in (image_folder / name).iterdir()]
    # the train folder is the val folder here: read once for pretraining, once as the val set
    assert {path: reads[path] for path in train_images} == {path: 2 for path in train_images}
