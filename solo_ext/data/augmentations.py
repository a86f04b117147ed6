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

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from PIL import Image, ImageFilter
from pydantic import Field, model_validator
from torchvision import transforms as T

from solo_ext.data.info import DATASETS, dataset_mean_std
from solo_ext.utils.declared import (
    FROM_LIST,
    Declared,
    NonNegative,
    Positive,
    PositiveInt,
    Rule,
    UnitInterval,
    number_in,
    plain,
)

# the ranges of utils/declared under the names the blocks below read best with
Probability = UnitInterval
Strength = NonNegative
Count = PositiveInt
if TYPE_CHECKING:  # the type checker sees the number; pydantic, below, its checked range
    Scale = float
    Hue = float
else:
    Scale = number_in(0, 1, low_open=True)
    Hue = number_in(0, 0.5)


class _Section(Declared):
    where: ClassVar[str] = "an augmentation"


class RandomResizedCropSpec(_Section):
    enabled: bool = True
    crop_min_scale: Scale = 0.08
    crop_max_scale: Scale = 1.0

    rules: ClassVar = (
        Rule(
            "crop_max_scale",
            lambda rrc, _: rrc.crop_min_scale <= rrc.crop_max_scale,
            "must satisfy 0 < crop_min_scale <= crop_max_scale <= 1",
        ),
    )


class _Random(_Section):
    """An augmentation applied with probability ``prob``. solo-learn's recipes write ``enabled`` in
    every section and its code reads it only for rrc; here ``enabled: False`` switches a section
    off (its prob becomes 0), True leaves prob in charge."""

    enabled: bool = Field(default=True, exclude=True)
    prob: Probability = 0.0

    @model_validator(mode="after")
    def _switched_off(self) -> _Random:
        if not self.enabled:
            self.prob = 0.0
        return self


class ColorJitterSpec(_Random):
    # Jitter strengths of solo-learn's (BYOL-style) recipes; only used when prob > 0.
    brightness: Strength = 0.4
    contrast: Strength = 0.4
    saturation: Strength = 0.2
    hue: Hue = 0.1


class FlipSpec(_Random):
    prob: Probability = 0.5


RGB = Annotated[tuple[float, float, float], FROM_LIST]
PositiveRGB = Annotated[tuple[Positive, Positive, Positive], FROM_LIST]


class AugmentationSpec(_Section):
    """One pipeline of the ``augmentations`` list (solo-learn's schema); see the module docstring."""

    rrc: RandomResizedCropSpec = RandomResizedCropSpec()
    color_jitter: ColorJitterSpec = ColorJitterSpec()
    grayscale: _Random = _Random()
    gaussian_blur: _Random = _Random()
    solarization: _Random = _Random()
    equalization: _Random = _Random()
    horizontal_flip: FlipSpec = FlipSpec()
    # None: the dataset's default crop size (DATASETS[dataset].crop_size)
    crop_size: Count | None = None
    num_crops: Count = 1
    # per-channel statistics, only used by the custom dataset
    mean: RGB | None = None
    std: PositiveRGB | None = None


AUGMENTATION_KEYS = tuple(AugmentationSpec.model_fields)


def fill_augmentation_defaults(aug_cfg: Mapping[str, Any], dataset: str | None = None) -> dict:
    """One ``augmentations`` entry with every key present, validated, as plain Python values.

    Missing keys take :class:`AugmentationSpec`'s defaults; ``crop_size`` left unset is the
    dataset's default crop size when ``dataset`` is given, else None. Sections are dicts,
    ``mean``/``std`` tuples of 3 floats or None.

    Raises:
        pydantic.ValidationError: an unknown key, a probability outside [0, 1], ``crop_size`` or
            ``num_crops`` below 1, scales outside ``0 < min <= max <= 1`` (``solo_ext.config``
            words it as one line).
    """
    out = AugmentationSpec.model_validate(plain(aug_cfg)).model_dump()
    if dataset is not None:
        out["crop_size"] = crop_size_of(out["crop_size"], dataset)
    return out


def crop_size_of(crop_size: int | None, dataset: str) -> int:
    """``crop_size`` as given, else (None) the dataset's default crop size (``DATASETS``)."""
    return DATASETS[dataset].crop_size if crop_size is None else crop_size


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


def crop_and_colour_ops(aug: Mapping, tv: Any) -> list:
    """The first ops of a pretraining pipeline, which the PIL and the uint8-tensor back-ends share:
    RandomResizedCrop (bicubic, scale [crop_min_scale, crop_max_scale]) or, with ``rrc.enabled``
    False, a bicubic resize to crop_size x crop_size (square, so crops of non-square images still
    stack into a batch); then ColorJitter and Grayscale when their prob > 0. ``tv`` is
    ``torchvision.transforms`` (PIL images) or ``torchvision.transforms.v2`` (tensors), which name
    these ops alike."""
    size, rrc, bicubic = aug["crop_size"], aug["rrc"], T.InterpolationMode.BICUBIC
    if rrc["enabled"]:
        scale = (rrc["crop_min_scale"], rrc["crop_max_scale"])
        ops = [tv.RandomResizedCrop(size, scale=scale, interpolation=bicubic, antialias=True)]
    else:
        ops = [tv.Resize((size, size), interpolation=bicubic, antialias=True)]
    jitter = aug["color_jitter"]
    if jitter["prob"] > 0:
        strengths = (jitter["brightness"], jitter["contrast"], jitter["saturation"], jitter["hue"])
        ops.append(tv.RandomApply([tv.ColorJitter(*strengths)], p=jitter["prob"]))
    if aug["grayscale"]["prob"] > 0:
        ops.append(tv.RandomGrayscale(p=aug["grayscale"]["prob"]))
    return ops


def build_transform_pipeline(dataset: str, aug_cfg: Mapping) -> Callable:
    """One pretraining pipeline: PIL image -> normalised float tensor (3, crop_size, crop_size).

    Order (solo-learn's): RandomResizedCrop (bicubic, scale [crop_min_scale, crop_max_scale]) or,
    with ``rrc.enabled`` False, a bicubic resize of the whole image to crop_size x crop_size;
    then, each only when its prob > 0, ColorJitter, Grayscale, GaussianBlur, Solarization,
    Equalization, HorizontalFlip; then ToTensor and Normalize with the dataset's mean/std (else
    the entry's ``mean``/``std``, else ImageNet's; see :func:`dataset_mean_std`).
    """
    cfg = fill_augmentation_defaults(aug_cfg, dataset)
    ops = crop_and_colour_ops(cfg, T)
    # torchvision's solarize and equalize are PIL's ImageOps.solarize(threshold 128) and
    # ImageOps.equalize on PIL images; the blur stays ours: torchvision's GaussianBlur takes a
    # kernel size, while the recipes' blur (SimCLR/BYOL) is PIL's, with only a random sigma
    if cfg["gaussian_blur"]["prob"] > 0:
        ops.append(T.RandomApply([GaussianBlur()], p=cfg["gaussian_blur"]["prob"]))
    if cfg["solarization"]["prob"] > 0:
        ops.append(T.RandomSolarize(128, p=cfg["solarization"]["prob"]))
    if cfg["equalization"]["prob"] > 0:
        ops.append(T.RandomEqualize(p=cfg["equalization"]["prob"]))
    if cfg["horizontal_flip"]["prob"] > 0:
        ops.append(T.RandomHorizontalFlip(p=cfg["horizontal_flip"]["prob"]))
    mean, std = dataset_mean_std(dataset, cfg)
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class NCropAugmentation:
    """Apply ``transform`` ``num_crops`` times to one image -> list of ``num_crops`` tensors."""

    def __init__(self, transform: Callable, num_crops: int) -> None:
        # num_crops >= 1 is declared on AugmentationSpec
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
    info = DATASETS[dataset]
    size = crop_size_of(crop_size, dataset)
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
