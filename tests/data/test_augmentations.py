import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageOps
from torchvision import transforms as T

from solo_ext.config.errors import ConfigError, validate
from solo_ext.data import (
    DATASETS,
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    fill_augmentation_defaults,
    prepare_transforms,
)
from solo_ext.data.augmentations import AugmentationSpec, GaussianBlur

ALL_ON = {
    "rrc": {"enabled": True, "crop_min_scale": 0.3, "crop_max_scale": 0.9},
    "color_jitter": {"prob": 1.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
    "grayscale": {"prob": 1.0},
    "gaussian_blur": {"prob": 1.0},
    "solarization": {"prob": 1.0},
    "equalization": {"prob": 1.0},
    "horizontal_flip": {"prob": 1.0},
    "crop_size": 24,
    "num_crops": 2,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
}


def noise_image(w=40, h=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_defaults_are_solo_learns_reconstruction_recipe():
    cfg = fill_augmentation_defaults({})
    assert cfg["rrc"] == {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0}
    assert cfg["color_jitter"] == {
        "prob": 0.0,
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.2,
        "hue": 0.1,
    }
    for section in ("grayscale", "gaussian_blur", "solarization", "equalization"):
        assert cfg[section] == {"prob": 0.0}
    assert cfg["horizontal_flip"] == {"prob": 0.5}
    assert cfg["num_crops"] == 1
    assert cfg["crop_size"] is None and cfg["mean"] is None and cfg["std"] is None
    assert fill_augmentation_defaults({}, dataset="cifar10")["crop_size"] == 32
    assert fill_augmentation_defaults({}, dataset="imagenet100")["crop_size"] == 224


def test_defaults_keep_given_values_and_accept_omegaconf():
    given = OmegaConf.create(
        {"rrc": {"crop_min_scale": 0.2}, "grayscale": {"prob": 1}, "crop_size": 18, "mean": [0, 0, 0]}
    )
    cfg = fill_augmentation_defaults(given, dataset="cifar10")
    assert cfg["rrc"] == {"enabled": True, "crop_min_scale": 0.2, "crop_max_scale": 1.0}
    assert cfg["grayscale"] == {"prob": 1.0} and isinstance(cfg["grayscale"]["prob"], float)
    assert cfg["crop_size"] == 18
    assert cfg["mean"] == (0.0, 0.0, 0.0)
    assert type(cfg) is dict and type(cfg["rrc"]) is dict
    # Filling an already filled entry changes nothing (the args layer and the pipeline both call it).
    assert fill_augmentation_defaults(cfg) == cfg


@pytest.mark.parametrize(
    "entry, prefix",
    [
        ({"rrc": {"crop_min_scale": 0}}, "augmentations[0].rrc.crop_min_scale=0: must be a number in (0, 1]"),
        ({"rrc": {"crop_min_scale": 0.9, "crop_max_scale": 0.5}}, "augmentations[0].rrc.crop_max_scale=0.5:"),
        ({"rrc": {"crop_max_scale": 1.5}}, "augmentations[0].rrc.crop_max_scale=1.5:"),
        ({"rrc": {"enabled": "yes"}}, "augmentations[0].rrc.enabled='yes': must be true or false"),
        (
            {"rrc": {"min_scale": 0.2}},
            "augmentations[0].rrc.min_scale=0.2: unknown key; allowed: crop_max_scale, crop_min_scale, "
            "enabled; did you mean 'crop_min_scale'?",
        ),
        (
            {"color_jitter": {"prob": 1.2}},
            "augmentations[0].color_jitter.prob=1.2: must be a number in [0, 1]",
        ),
        (
            {"color_jitter": {"hue": 0.7}},
            "augmentations[0].color_jitter.hue=0.7: must be a number in [0, 0.5]",
        ),
        (
            {"color_jitter": {"brightness": -1}},
            "augmentations[0].color_jitter.brightness=-1: must be a number >= 0",
        ),
        ({"grayscale": {"prob": -0.1}}, "augmentations[0].grayscale.prob=-0.1:"),
        ({"gaussian_blur": {"prob": 2}}, "augmentations[0].gaussian_blur.prob=2:"),
        ({"solarization": {"prob": True}}, "augmentations[0].solarization.prob=True:"),
        ({"equalization": {"prob": "0.2"}}, "augmentations[0].equalization.prob='0.2':"),
        ({"horizontal_flip": {"prob": 1.01}}, "augmentations[0].horizontal_flip.prob=1.01:"),
        ({"grayscale": 0.2}, "augmentations[0].grayscale=0.2: must be a mapping"),
        ({"crop_size": 0}, "augmentations[0].crop_size=0: must be an integer >= 1"),
        ({"crop_size": 2.5}, "augmentations[0].crop_size=2.5: must be an integer"),
        ({"num_crops": 0}, "augmentations[0].num_crops=0: must be an integer >= 1"),
        (
            {"colour_jitter": {}},
            "augmentations[0].colour_jitter={}: unknown key; did you mean 'color_jitter'?",
        ),
        ({"mean": [0.5, 0.5]}, "augmentations[0].mean=[0.5, 0.5]: has no item [2]"),
        (
            {"std": [0.5, 0.0, 0.5]},
            "augmentations[0].std[1]=0.0: must be a number > 0",
        ),
    ],
)
def test_each_invalid_value_names_its_key(entry, prefix):
    with pytest.raises(ConfigError) as info:
        validate(AugmentationSpec, entry, "augmentations[0]")
    message = str(info.value)
    assert message.startswith(prefix), message
    assert "\n" not in message


def test_entry_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^augmentations\[2\]=\[1, 2\]: must be a mapping"):
        validate(AugmentationSpec, [1, 2], "augmentations[2]")


def test_everything_on_at_prob_1_gives_the_crop_shape_and_runs_every_op():
    pipeline = build_transform_pipeline("custom", ALL_ON)
    kinds = [type(op) for op in pipeline.transforms]
    assert kinds == [
        T.RandomResizedCrop,
        T.RandomApply,
        T.RandomGrayscale,
        T.RandomApply,
        T.RandomSolarize,
        T.RandomEqualize,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    applied = [type(op.transforms[0]) for op in pipeline.transforms if isinstance(op, T.RandomApply)]
    assert applied == [T.ColorJitter, GaussianBlur]
    assert pipeline.transforms[0].interpolation == T.InterpolationMode.BICUBIC
    assert pipeline.transforms[0].scale == (0.3, 0.9)
    torch.manual_seed(0)
    x = pipeline(noise_image())
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    # Grayscale ran at p=1 and mean/std are equal per channel, so the channels agree.
    assert torch.allclose(x[0], x[1]) and torch.allclose(x[1], x[2])
    # Equalization ran last among the colour ops: values span the full range -> (0-0.5)/0.25..(1-0.5)/0.25.
    assert x.min() < -1.5 and x.max() > 1.5


def test_zero_probability_ops_are_left_out():
    pipeline = build_transform_pipeline("cifar10", {"crop_size": 32})
    assert [type(op) for op in pipeline.transforms] == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    no_flip = build_transform_pipeline("cifar10", {"horizontal_flip": {"prob": 0.0}})
    assert T.RandomHorizontalFlip not in [type(op) for op in no_flip.transforms]


def test_rrc_disabled_resizes_whole_image_to_a_square():
    pipeline = build_transform_pipeline("custom", {"rrc": {"enabled": False}, "crop_size": 20})
    assert isinstance(pipeline.transforms[0], T.Resize)
    assert pipeline(noise_image(50, 30)).shape == (3, 20, 20)


def test_normalisation_precedence():
    # Known dataset statistics win over the entry's mean/std (solo-learn's behaviour) ...
    norm = build_transform_pipeline("cifar10", {"mean": [0, 0, 0], "std": [1, 1, 1]}).transforms[-1]
    assert tuple(norm.mean) == DATASETS["cifar10"].mean and tuple(norm.std) == DATASETS["cifar10"].std
    # ... the entry's are used for custom data, ImageNet's otherwise.
    norm = build_transform_pipeline("custom", {"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}).transforms[-1]
    assert tuple(norm.mean) == (0.1, 0.2, 0.3) and tuple(norm.std) == (1.0, 2.0, 3.0)
    norm = build_transform_pipeline("custom", {}).transforms[-1]
    assert tuple(norm.mean) == (0.485, 0.456, 0.406)


def test_crop_size_defaults_to_the_datasets():
    assert build_transform_pipeline("stl10", {})(noise_image(96, 96)).shape == (3, 96, 96)
    assert build_transform_pipeline("digits", {})(noise_image(32, 32)).shape == (3, 32, 32)


class Tag:
    """A transform that returns a fixed tensor, so crop order is visible."""

    def __init__(self, value):
        self.value = value

    def __call__(self, img):
        return torch.full((1,), float(self.value))


def test_ncrop_and_full_pipeline_counts_and_order():
    n = NCropAugmentation(Tag(7), 3)
    assert [c.item() for c in n(noise_image())] == [7, 7, 7]
    full = FullTransformPipeline([NCropAugmentation(Tag(1), 2), NCropAugmentation(Tag(2), 3)])
    assert full.num_crops == 5
    assert [c.item() for c in full(noise_image())] == [1, 1, 2, 2, 2]
    assert str(full).splitlines()[0].startswith("2 x [")


def test_multicrop_shapes_from_real_pipelines():
    large = build_transform_pipeline("custom", {**ALL_ON, "crop_size": 32})
    small = build_transform_pipeline("custom", {**ALL_ON, "crop_size": 16})
    crops = FullTransformPipeline([NCropAugmentation(large, 2), NCropAugmentation(small, 4)])(noise_image())
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 4
    # Two crops of one image differ: the randomness is per crop.
    assert not torch.equal(crops[0], crops[1])


@pytest.mark.parametrize(
    "dataset, size, crop_size, expected",
    [
        ("cifar10", (32, 32), None, 32),
        ("cifar100", (32, 32), 48, 48),
        ("stl10", (96, 96), None, 96),
        ("imagenet", (300, 250), None, 224),
        ("imagenet100", (300, 250), 64, 64),
        ("custom", (90, 70), 40, 40),
        ("tiny-imagenet", (64, 64), None, 64),
        ("digits", (32, 32), None, 32),
    ],
)
def test_classification_transforms_sizes(dataset, size, crop_size, expected):
    t_train, t_val = prepare_transforms(dataset, crop_size)
    img = noise_image(*size)
    assert t_train(img).shape == (3, expected, expected)
    assert t_val(img).shape == (3, expected, expected)


def test_classification_val_transforms_are_deterministic_and_solo_learns():
    _, t_val = prepare_transforms("cifar10")
    assert [type(op) for op in t_val.transforms] == [T.ToTensor, T.Normalize]
    _, t_val = prepare_transforms("imagenet")
    assert [type(op) for op in t_val.transforms] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert t_val.transforms[0].size == 256
    t_train, _ = prepare_transforms("digits")
    assert T.RandomHorizontalFlip not in [type(op) for op in t_train.transforms]


def test_classification_transforms_resize_bicubic_as_maes_probe():
    import torchvision.transforms as T

    from solo_ext.data import prepare_transforms

    for dataset, size in (("imagenet", 224), ("stl10", 96), ("digits", 32)):
        train, val = prepare_transforms(dataset, size)
        resizers = [
            t for t in (*train.transforms, *val.transforms) if isinstance(t, T.RandomResizedCrop | T.Resize)
        ]
        assert resizers and all(t.interpolation == T.InterpolationMode.BICUBIC for t in resizers), dataset


def test_torchvision_solarize_and_equalize_are_pils():
    # the PIL pipeline uses torchvision's RandomSolarize(128) and RandomEqualize: on PIL images
    # they must be exactly ImageOps.solarize(threshold=128) and ImageOps.equalize, as the
    # BYOL/solo-learn recipes define them
    image = noise_image(37, 29, seed=3)
    solarized = T.RandomSolarize(128, p=1.0)(image)
    equalized = T.RandomEqualize(p=1.0)(image)
    assert np.array_equal(np.asarray(solarized), np.asarray(ImageOps.solarize(image, threshold=128)))
    assert np.array_equal(np.asarray(equalized), np.asarray(ImageOps.equalize(image)))
