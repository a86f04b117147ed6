"""Augmentation pipelines from the ``augmentations`` config list, and fixed eval transforms.

One entry of the YAML ``augmentations`` list describes one pipeline (solo-learn's schema)::

    - rrc: {enabled: True, crop_min_scale: 0.08, crop_max_scale: 1.0}
      color_jitter: {prob: 0.0, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1}
      grayscale: {prob: 0.0}
      gaussian_blur: {prob: 0.0}
      solarization: {prob: 0.0}
      equalization: {prob: 0.0}
      horizontal_flip: {prob: 0.5}
      crop_size: 32
      num_crops: 1
      mean: null   # only used by the custom dataset
      std: null

Each image yields ``num_crops`` crops per pipeline, pipelines in list order
(:class:`FullTransformPipeline` of :class:`NCropAugmentation`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from numbers import Real

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T

from solo_ext.data.info import check_dataset, dataset_mean_std
from solo_ext.utils.errors import ConfigError

_SECTION_DEFAULTS = {
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    # Jitter strengths of solo-learn's (BYOL-style) recipes; only used when prob > 0.
    "color_jitter": {"prob": 0.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
    "grayscale": {"prob": 0.0},
    "gaussian_blur": {"prob": 0.0},
    "solarization": {"prob": 0.0},
    "equalization": {"prob": 0.0},
    "horizontal_flip": {"prob": 0.5},
}
# crop_size None means "the dataset's default crop size" (DATASETS[dataset].crop_size).
_SCALAR_DEFAULTS = {"crop_size": None, "num_crops": 1, "mean": None, "std": None}
AUGMENTATION_KEYS = (*_SECTION_DEFAULTS, *_SCALAR_DEFAULTS)


def _fail(name: str, value, allowed: str):
    raise ConfigError(f"{name}={value!r}: {allowed}")


def _unknown_key(name: str, value, sub: str, allowed: Sequence[str]):
    close = difflib.get_close_matches(sub, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    _fail(name, value, f"unknown key; {hint}allowed: {', '.join(allowed)}")


def _real(name: str, value, lo: float, hi: float, allowed: str) -> float:
    # bool is an int subclass; "True" as a probability is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, Real) or not lo <= float(value) <= hi:
        _fail(name, value, allowed)
    return float(value)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "must be an integer >= 1")
    return int(value)


def _channel_stats(name: str, value, positive: bool) -> tuple[float, float, float] | None:
    if value is None:
        return None
    allowed = f"must be null or 3 {'positive ' if positive else ''}numbers (one per RGB channel)"
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3:
        _fail(name, value, allowed)
    numbers = [v for v in value if isinstance(v, Real) and not isinstance(v, bool)]
    if len(numbers) != 3 or (positive and min(numbers) <= 0):
        _fail(name, value, allowed)
    return tuple(float(v) for v in numbers)


def _fill_section(key: str, section: str, given) -> dict:
    defaults = _SECTION_DEFAULTS[section]
    name = f"{key}.{section}"
    if not isinstance(given, Mapping):
        _fail(name, given, f"must be a mapping with keys {', '.join(defaults)}")
    # solo-learn's recipes write ``enabled`` in every section, and its code reads it only for rrc;
    # here ``enabled: False`` switches a section off (its prob becomes 0), True leaves prob in charge.
    allowed = list(defaults) if "enabled" in defaults else ["enabled", *defaults]
    for sub, value in given.items():
        if sub not in allowed:
            _unknown_key(f"{name}.{sub}", value, str(sub), allowed)
    out = {**defaults, **given}
    for sub, value in out.items():
        if sub == "enabled":
            if not isinstance(value, bool):
                _fail(f"{name}.enabled", value, "must be True or False")
        elif sub == "prob":
            out[sub] = _real(f"{name}.prob", value, 0.0, 1.0, "must be a probability in [0, 1]")
        elif sub == "hue":
            out[sub] = _real(f"{name}.hue", value, 0.0, 0.5, "must be in [0, 0.5]")
        elif sub in ("brightness", "contrast", "saturation"):
            out[sub] = _real(f"{name}.{sub}", value, 0.0, float("inf"), "must be a number >= 0")
    if section != "rrc" and out.pop("enabled", True) is False:
        out["prob"] = 0.0
    if section == "rrc":
        allowed = "must satisfy 0 < crop_min_scale <= crop_max_scale <= 1"
        low = _real(f"{name}.crop_min_scale", out["crop_min_scale"], 0.0, 1.0, allowed)
        high = _real(f"{name}.crop_max_scale", out["crop_max_scale"], 0.0, 1.0, allowed)
        if low <= 0.0:
            _fail(f"{name}.crop_min_scale", out["crop_min_scale"], allowed)
        if low > high:
            _fail(f"{name}.crop_max_scale", out["crop_max_scale"], allowed)
        out["crop_min_scale"], out["crop_max_scale"] = low, high
    return out


def fill_augmentation_defaults(aug_cfg: Mapping, key: str, dataset: str | None = None) -> dict:
    """One ``augmentations`` entry with every key present, validated, as plain Python values.

    Missing keys take the defaults shown in this module's docstring. ``crop_size`` left unset is
    filled with the dataset's default crop size when ``dataset`` is given and stays None (resolved
    by :func:`build_transform_pipeline`) otherwise.

    Args:
        aug_cfg: the entry (dict or OmegaConf DictConfig).
        key: its position in the config, e.g. ``"augmentations[0]"``, used in error messages.
        dataset: optional dataset name, to fill ``crop_size``.

    Returns:
        A new dict; sections are dicts, ``mean``/``std`` tuples of 3 floats or None.

    Raises:
        ConfigError: one line ``<key>.<sub>=<value!r>: <what is allowed>`` for an unknown key
            (with the closest valid one), a probability outside [0, 1], ``crop_size`` or
            ``num_crops`` below 1, or scales outside ``0 < min <= max <= 1``.
    """
    if not isinstance(aug_cfg, Mapping):
        _fail(key, aug_cfg, f"must be a mapping with keys {', '.join(AUGMENTATION_KEYS)}")
    for sub, value in aug_cfg.items():
        if sub not in AUGMENTATION_KEYS:
            _unknown_key(f"{key}.{sub}", value, str(sub), AUGMENTATION_KEYS)
    out = {section: _fill_section(key, section, aug_cfg.get(section, {})) for section in _SECTION_DEFAULTS}
    crop_size = aug_cfg.get("crop_size")
    if crop_size is None and dataset is not None:
        crop_size = check_dataset(dataset).crop_size
    out["crop_size"] = None if crop_size is None else _positive_int(f"{key}.crop_size", crop_size)
    out["num_crops"] = _positive_int(f"{key}.num_crops", aug_cfg.get("num_crops", 1))
    out["mean"] = _channel_stats(f"{key}.mean", aug_cfg.get("mean"), positive=False)
    out["std"] = _channel_stats(f"{key}.std", aug_cfg.get("std"), positive=True)
    return out


class GaussianBlur:
    """Blur a PIL image with a Gaussian whose sigma is drawn uniformly from ``sigma`` (SimCLR/BYOL)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        # torch's generator, not `random`, so that DataLoader worker seeding governs it.
        radius = float(torch.empty(()).uniform_(self.sigma[0], self.sigma[1]))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class Solarization:
    """Invert every pixel value >= 128 (PIL ``ImageOps.solarize``, BYOL)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img, threshold=128)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Equalization:
    """Histogram equalisation per channel (PIL ``ImageOps.equalize``)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.equalize(img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_transform_pipeline(dataset: str, aug_cfg: Mapping) -> Callable:
    """One pretraining pipeline: PIL image -> normalised float tensor (3, crop_size, crop_size).

    Order (solo-learn's): RandomResizedCrop (bicubic, scale [crop_min_scale, crop_max_scale]) or,
    with ``rrc.enabled`` False, a bicubic resize of the whole image to crop_size x crop_size;
    then, each only when its prob > 0, ColorJitter, Grayscale, GaussianBlur, Solarization,
    Equalization, HorizontalFlip; then ToTensor and Normalize with the dataset's mean/std (else
    the entry's ``mean``/``std``, else ImageNet's; see :func:`dataset_mean_std`).
    """
    cfg = fill_augmentation_defaults(aug_cfg, "augmentations", dataset)
    size = cfg["crop_size"]
    bicubic = T.InterpolationMode.BICUBIC
    rrc = cfg["rrc"]
    if rrc["enabled"]:
        ops = [
            T.RandomResizedCrop(
                size, scale=(rrc["crop_min_scale"], rrc["crop_max_scale"]), interpolation=bicubic
            )
        ]
    else:
        # A square target, so that crops of non-square images still stack into a batch.
        ops = [T.Resize((size, size), interpolation=bicubic)]
    jitter = cfg["color_jitter"]
    if jitter["prob"] > 0:
        strengths = (jitter["brightness"], jitter["contrast"], jitter["saturation"], jitter["hue"])
        ops.append(T.RandomApply([T.ColorJitter(*strengths)], p=jitter["prob"]))
    if cfg["grayscale"]["prob"] > 0:
        ops.append(T.RandomGrayscale(p=cfg["grayscale"]["prob"]))
    for section, op in (
        ("gaussian_blur", GaussianBlur()),
        ("solarization", Solarization()),
        ("equalization", Equalization()),
    ):
        if cfg[section]["prob"] > 0:
            ops.append(T.RandomApply([op], p=cfg[section]["prob"]))
    if cfg["horizontal_flip"]["prob"] > 0:
        ops.append(T.RandomHorizontalFlip(p=cfg["horizontal_flip"]["prob"]))
    mean, std = dataset_mean_std(dataset, cfg)
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class NCropAugmentation:
    """Apply ``transform`` ``num_crops`` times to one image -> list of ``num_crops`` tensors."""

    def __init__(self, transform: Callable, num_crops: int) -> None:
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.transform = transform
        self.num_crops = num_crops

    def __call__(self, x: Image.Image) -> list[torch.Tensor]:
        return [self.transform(x) for _ in range(self.num_crops)]

    def __repr__(self) -> str:
        return f"{self.num_crops} x [{self.transform}]"


class FullTransformPipeline:
    """All pipelines of the ``augmentations`` list: image -> [pipeline 0's crops, pipeline 1's, ...]."""

    def __init__(self, transforms: Sequence[NCropAugmentation]) -> None:
        self.transforms = list(transforms)

    @property
    def num_crops(self) -> int:
        return sum(t.num_crops for t in self.transforms)

    def __call__(self, x: Image.Image) -> list[torch.Tensor]:
        crops = []
        for transform in self.transforms:
            crops.extend(transform(x))
        return crops

    def __repr__(self) -> str:
        return "\n".join(str(t) for t in self.transforms)


def prepare_transforms(
    dataset: str, crop_size: int | None = None, aug_cfg: Mapping | None = None
) -> tuple[Callable, Callable]:
    """Fixed classification transforms ``(T_train, T_val)``, PIL image -> tensor (3, s, s).

    ``s`` is ``crop_size`` or the dataset's default (cifar 32, stl10 96, tiny-imagenet 64,
    digits 32, imagenet/imagenet100/custom 224). As in solo-learn:

    - cifar10/100, tiny-imagenet: train RandomResizedCrop(s, scale 0.08-1) + flip; val the
      image as stored (resized to s x s only when s differs from the stored size).
    - stl10: train RandomResizedCrop(s) + flip; val resize to s x s.
    - imagenet, imagenet100, custom: train RandomResizedCrop(s) + flip; val resize the short
      side to s * 256/224 and center-crop s.
    - digits: train RandomResizedCrop(s, scale 0.5-1) without flip (a mirrored digit can read
      as another, and a crop under half the 8x8 source loses the digit); val as stored.

    Resizing is bicubic (MAE's probe). Normalisation: :func:`dataset_mean_std` (``aug_cfg``
    supplies mean/std for custom).
    """
    info = check_dataset(dataset)
    size = info.crop_size if crop_size is None else _positive_int("crop_size", crop_size)
    normalize = [T.ToTensor(), T.Normalize(*dataset_mean_std(dataset, aug_cfg))]
    # bicubic throughout, as MAE's linear probe and fine-tuning transforms
    bicubic = T.InterpolationMode.BICUBIC
    if dataset == "digits":
        train = [T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=bicubic)]
    else:
        train = [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=bicubic),
            T.RandomHorizontalFlip(),
        ]
    if info.image_size is None:
        val = [T.Resize(round(size * 256 / 224), interpolation=bicubic), T.CenterCrop(size)]
    elif dataset == "stl10" or size != info.image_size:
        val = [T.Resize((size, size), interpolation=bicubic)]
    else:
        val = []
    return T.Compose(train + normalize), T.Compose(val + normalize)
