from collections import Counter

import pytest
import torch
from tiny_images import CLASSES, IMAGES_PER_CLASS, class_value, write_image
from torchvision import transforms as T

from solo_ext.config.errors import ConfigError, validate
from solo_ext.config.schema import Data
from solo_ext.data import (
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    num_classes_of,
    prepare_classification_datasets,
    prepare_dataloader,
    prepare_pretrain_dataset,
)
from solo_ext.utils.errors import DataError

TO_TENSOR = T.ToTensor()


def grey_level(x: torch.Tensor) -> int:
    return round(float(x.mean()) * 255)


def test_image_folder_items_and_labels(image_folder):
    ds = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(image_folder))
    assert len(ds) == len(CLASSES) * IMAGES_PER_CLASS
    for i in range(len(ds)):
        index, x, target = ds[i]
        assert index == i and x.shape == (3, 40, 40)
        assert grey_level(x) == class_value(target)
    assert Counter(ds[i][2] for i in range(len(ds))) == {k: IMAGES_PER_CLASS for k in range(len(CLASSES))}
    assert num_classes_of("custom", str(image_folder)) == len(CLASSES)
    assert num_classes_of("custom", str(image_folder), no_labels=True) is None


def test_ram_image_folder_gives_the_same_items(noise_folder):
    lazy = prepare_pretrain_dataset("imagenet100", TO_TENSOR, train_path=str(noise_folder))
    ram = prepare_pretrain_dataset(
        "imagenet100", TO_TENSOR, train_path=str(noise_folder), data_format="ram_image_folder"
    )
    assert len(lazy) == len(ram)
    for i in range(len(lazy)):
        (i_lazy, x_lazy, y_lazy), (i_ram, x_ram, y_ram) = lazy[i], ram[i]
        assert (i_lazy, y_lazy) == (i_ram, y_ram)
        assert torch.equal(x_lazy, x_ram)
    # Decoded at construction: without the files, ram items are unchanged and lazy ones fail.
    expected = [lazy[i][1] for i in range(len(lazy))]
    for path in noise_folder.rglob("*.png"):
        path.unlink()
    assert all(torch.equal(ram[i][1], expected[i]) for i in range(len(ram)))
    with pytest.raises(DataError, match="cannot decode image"):
        lazy[0]


def test_flat_folder_without_labels(tmp_path):
    for i in range(5):
        write_image(tmp_path / "flat" / f"{i}.jpg", seed=i)
    write_image(tmp_path / "flat" / "nested" / "deeper.png", seed=9)
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    ds = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(tmp_path / "flat"), no_labels=True)
    assert len(ds) == 6
    assert {ds[i][2] for i in range(len(ds))} == {-1}


def test_custom_flat_folder_without_no_labels_says_what_to_do(tmp_path):
    write_image(tmp_path / "flat" / "0.png")
    with pytest.raises(DataError, match="no class folders .*set data.no_labels=True"):
        prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(tmp_path / "flat"))


def test_no_labels_hides_labels_of_a_labelled_folder(image_folder):
    ds = prepare_pretrain_dataset("imagenet", TO_TENSOR, train_path=str(image_folder), no_labels=True)
    assert {ds[i][2] for i in range(len(ds))} == {-1}


def write_tiny_imagenet(root):
    """Native Tiny-ImageNet layout with 3 wnids, 2 train images each and 6 val images."""
    wnids = ["n02", "n01", "n03"]  # deliberately unsorted on disk creation
    for wnid in wnids:
        value = class_value(sorted(wnids).index(wnid))
        for i in range(2):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", value)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    val_labels = ["n03", "n01", "n02", "n02", "n01", "n03"]
    lines = []
    for i, wnid in enumerate(val_labels):
        write_image(root / "val" / "images" / f"val_{i}.JPEG", class_value(sorted(wnids).index(wnid)))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return val_labels


def test_tiny_imagenet_native_layout(tmp_path):
    val_labels = write_tiny_imagenet(tmp_path)
    train, val = prepare_classification_datasets(
        "tiny-imagenet", TO_TENSOR, TO_TENSOR, str(tmp_path / "train"), str(tmp_path / "val")
    )
    assert train.classes == ["n01", "n02", "n03"]
    assert len(train) == 6 and len(val) == 6
    assert [val[i][1] for i in range(6)] == [train.classes.index(w) for w in val_labels]
    for ds in (train, val):
        for x, y in ds:
            # JPEG keeps a solid grey within a level or two.
            assert abs(grey_level(x) - class_value(y)) <= 2
    pre = prepare_pretrain_dataset("tiny-imagenet", TO_TENSOR, train_path=str(tmp_path / "train"))
    assert len(pre) == 6
    assert num_classes_of("tiny-imagenet", None) == 200


def test_tiny_imagenet_val_already_in_class_folders(tmp_path):
    write_tiny_imagenet(tmp_path)
    for i, wnid in enumerate(["n03", "n01"]):
        write_image(
            tmp_path / "val_sorted" / wnid / f"{i}.JPEG", class_value(["n01", "n02", "n03"].index(wnid))
        )
    _, val = prepare_classification_datasets(
        "tiny-imagenet", TO_TENSOR, TO_TENSOR, str(tmp_path / "train"), str(tmp_path / "val_sorted")
    )
    assert sorted(y for _, y in val) == [0, 2]


def test_tiny_imagenet_annotation_with_unknown_wnid(tmp_path):
    write_tiny_imagenet(tmp_path)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt line 1: 'n99' is not a class"):
        prepare_classification_datasets(
            "tiny-imagenet", TO_TENSOR, TO_TENSOR, str(tmp_path / "train"), str(tmp_path / "val")
        )


def test_val_folder_uses_the_train_classes(image_folder, tmp_path):
    # A val folder missing the first class must still label "bee" as 1, not 0.
    write_image(tmp_path / "val" / "bee" / "0.png", class_value(1))
    _, val = prepare_classification_datasets(
        "custom", TO_TENSOR, TO_TENSOR, str(image_folder), str(tmp_path / "val")
    )
    assert [y for _, y in val] == [1]
    write_image(tmp_path / "val" / "dog" / "0.png", 0)
    with pytest.raises(DataError, match="dog are not among the 3 classes"):
        prepare_classification_datasets(
            "custom", TO_TENSOR, TO_TENSOR, str(image_folder), str(tmp_path / "val")
        )


def test_custom_classification_needs_a_val_path(image_folder):
    with pytest.raises(DataError, match=r"^data.val_path=None: dataset custom has no default val folder"):
        prepare_classification_datasets("custom", TO_TENSOR, TO_TENSOR, str(image_folder))


def test_fraction_is_stratified_and_deterministic(tmp_path):
    counts = {"a": 10, "b": 20, "c": 30}
    for name, n in counts.items():
        for i in range(n):
            write_image(tmp_path / "f" / name / f"{i}.png", 0, size=(8, 8))
    ds = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(tmp_path / "f"), fraction=0.5)
    assert Counter(ds[i][2] for i in range(len(ds))) == {0: 5, 1: 10, 2: 15}
    again = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(tmp_path / "f"), fraction=0.5)
    assert ds.base.images == again.base.images
    assert [ds[i][0] for i in range(len(ds))] == list(range(30))
    unlabeled = prepare_pretrain_dataset(
        "custom", TO_TENSOR, train_path=str(tmp_path / "f"), fraction=0.25, no_labels=True
    )
    assert len(unlabeled) == 15
    train, _ = prepare_classification_datasets(
        "custom", TO_TENSOR, TO_TENSOR, str(tmp_path / "f"), str(tmp_path / "f"), fraction=0.1
    )
    assert Counter(y for _, y in train) == {0: 1, 1: 2, 2: 3}
    whole = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(tmp_path / "f"), fraction=1)
    assert len(whole) == 60


@pytest.mark.parametrize("fraction", [0, 1.5, -0.5, -2, True, "0.5"])
def test_invalid_fraction(image_folder, fraction):
    data = {"dataset": "custom", "train_path": str(image_folder), "fraction": fraction}
    with pytest.raises(ConfigError, match=r"^data.fraction="):
        validate(Data, data, "data")


def test_fraction_too_small_for_every_class(image_folder):
    with pytest.raises(DataError, match=r"^data.fraction=0.1: cannot take it of 12 images"):
        prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(image_folder), fraction=0.1)


def test_missing_folder_message():
    with pytest.raises(DataError) as info:
        prepare_pretrain_dataset("imagenet100", TO_TENSOR, train_path="/x/y")
    assert str(info.value) == (
        "data.train_path='/x/y': no such folder "
        "(dataset imagenet100 expects ImageFolder layout <root>/<class>/<image>)"
    )
    with pytest.raises(
        DataError, match=r"^data.train_path='/x/y': no such folder \(dataset tiny-imagenet expects"
    ):
        prepare_pretrain_dataset("tiny-imagenet", TO_TENSOR, train_path="/x/y")
    with pytest.raises(DataError, match=r"^data.train_path='/x/y': no such folder"):
        num_classes_of("custom", "/x/y")


def test_default_train_path_is_under_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^data.train_path='./datasets/imagenet-100/train': no such folder"):
        prepare_pretrain_dataset("imagenet100", TO_TENSOR)


def test_empty_class_folder(image_folder):
    (image_folder / "empty").mkdir()
    with pytest.raises(DataError, match="class folder 'empty' holds no images"):
        prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(image_folder))


def test_corrupt_image_names_the_file(image_folder):
    bad = image_folder / "bee" / "broken.png"
    bad.write_bytes(b"this is not a png")
    ds = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(image_folder))
    index = next(i for i in range(len(ds)) if ds.base.images[i] == bad)
    with pytest.raises(DataError, match=f"cannot decode image '{bad}'"):
        ds[index]
    with pytest.raises(DataError, match=f"cannot decode image '{bad}'"):
        prepare_pretrain_dataset(
            "custom", TO_TENSOR, train_path=str(image_folder), data_format="ram_image_folder"
        )


def test_truncated_image_names_the_file(image_folder):
    victim = image_folder / "ant" / "0.png"
    victim.write_bytes(victim.read_bytes()[:60])
    ds = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(image_folder))
    with pytest.raises(DataError, match=f"'{victim}'"):
        ds[0]


def test_unknown_dataset_and_format(image_folder):
    with pytest.raises(
        ConfigError, match=r"^data.dataset='cifar': must be one of .*did you mean 'cifar10'\?"
    ):
        validate(Data, {"dataset": "cifar"}, "data")
    with pytest.raises(
        ConfigError, match=r"^data.format='h5': must be one of image_folder, ram_image_folder, dali"
    ):
        validate(Data, {"dataset": "custom", "format": "h5"}, "data")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_pretrain_batch_structure(noise_folder, num_workers):
    transform = FullTransformPipeline(
        [
            NCropAugmentation(
                build_transform_pipeline("custom", {"crop_size": 24, "grayscale": {"prob": 0.5}}), 2
            ),
            NCropAugmentation(build_transform_pipeline("custom", {"crop_size": 16}), 3),
        ]
    )
    ds = prepare_pretrain_dataset("custom", transform, train_path=str(noise_folder))
    loader = prepare_dataloader(ds, batch_size=5, num_workers=num_workers)
    assert loader.drop_last and loader.pin_memory == torch.cuda.is_available()
    assert loader.persistent_workers == (num_workers > 0)
    batches = list(loader)
    assert len(batches) == 12 // 5
    indexes, crops, targets = batches[0]
    assert indexes.shape == (5,) and targets.shape == (5,)
    assert [tuple(c.shape) for c in crops] == [(5, 3, 24, 24)] * 2 + [(5, 3, 16, 16)] * 3
    assert set(targets.tolist()) <= {0, 1, 2}
    seen = torch.cat([b[0] for b in batches])
    assert len(set(seen.tolist())) == 10  # shuffled, no repeats, last partial batch dropped


def test_classification_loader_keeps_every_sample(image_folder):
    train, val = prepare_classification_datasets(
        "custom", TO_TENSOR, TO_TENSOR, str(image_folder), str(image_folder)
    )
    loader = prepare_dataloader(val, batch_size=5, num_workers=0, shuffle=False, drop_last=False)
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [5, 5, 2]
    assert batches[0][0].shape == (5, 3, 40, 40) and batches[0][1].tolist() == [0, 0, 0, 0, 1]


def test_dataloader_argument_errors(image_folder):
    ds = prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(image_folder))
    with pytest.raises(ConfigError, match=r"^data.num_workers=-1: must be an integer >= 0"):
        validate(Data, {"dataset": "custom", "num_workers": -1}, "data")
    with pytest.raises(DataError, match=r"^optimizer.batch_size=13: larger than the dataset \(12 images\)"):
        prepare_dataloader(ds, 13, 0)
    assert len(prepare_dataloader(ds, 13, 0, drop_last=False)) == 1


@pytest.mark.parametrize(
    "line, message",
    [
        ("val_0.JPEG n01", r"line 1: expected '<filename>\\t<wnid>\\t...', got 'val_0.JPEG n01'"),
        ("gone.JPEG\tn01\t0\t0\t1\t1", r"line 1: image '.*gone.JPEG' does not exist"),
        ("", "lists no images"),
    ],
)
def test_tiny_imagenet_bad_annotations(tmp_path, line, message):
    write_tiny_imagenet(tmp_path)
    (tmp_path / "val" / "val_annotations.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=rf"^data.val_path='.*val': val_annotations.txt {message}"):
        prepare_classification_datasets(
            "tiny-imagenet", TO_TENSOR, TO_TENSOR, str(tmp_path / "train"), str(tmp_path / "val")
        )


def test_flat_folder_missing_or_without_images(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    for root, message in ((tmp_path / "gone", "no such folder"), (tmp_path / "flat", "no images")):
        with pytest.raises(DataError, match=rf"^data.train_path='{root}': {message} \(.*"):
            prepare_pretrain_dataset("custom", TO_TENSOR, train_path=str(root), no_labels=True)


def test_image_samples_need_a_target_per_image(tmp_path):
    from solo_ext.data.folders import ImageSamples

    with pytest.raises(ValueError, match="shorter"):
        ImageSamples([tmp_path / "a.png", tmp_path / "b.png"], [0])
