"""``data.format: dali``: NVIDIA DALI pipelines over the same image folders, for pretraining and
linear evaluation (optional extra: ``pip install -e ".[dali]"``, package ``nvidia-dali-cuda120``).

The files and labels come from the readers of :mod:`solo_ext.data.folders` (so every layout and
``data.fraction`` behave as with ``image_folder``); DALI decodes and augments. Decoding is
"mixed" (nvJPEG on the GPU) and the ops run on the GPU when CUDA is present, on DALI's CPU
back-end otherwise.

Order and sharding are ours, not DALI's reader's: each epoch's permutation is drawn from
``(seed, epoch)`` alone, the same on every rank, padded by wrap-around to a multiple of the world
size and dealt out ``perm[rank::world_size]`` (as ``DistributedSampler`` does), so every rank does
the same number of steps and a restarted epoch sees the same order. The augmentation draws follow
from ``(seed, epoch, rank)`` (the pipeline is rebuilt with that seed every epoch). Lightning calls
``loader.sampler.set_epoch(epoch)`` before each epoch, as it does for a ``DistributedSampler``.

Batches look to the LightningModule exactly like the PyTorch loaders' batches, with uint8 images
that the module normalises on the device (:func:`~solo_ext.data.tensor_pipeline.normalize_images`):
pretraining ``[indexes (B,), [crop_0 (B, 3, s, s), ...], targets (B,)]``, classification
``[x (B, 3, s, s), y (B,)]``.

The augmentation entry (filled by :func:`~solo_ext.data.augmentations.fill_augmentation_defaults`)
maps op for op onto DALI, in the PIL pipeline's order: ``random_resized_crop`` (cubic,
antialiased; or ``resize`` to s x s), ``color_twist`` (brightness, contrast, saturation, hue;
DALI applies them in a fixed order where torchvision draws one, and its contrast pivots on mid-grey
rather than the image's mean grey), grayscale as ``color_twist(saturation=0)`` (the same luma
weights), ``gaussian_blur`` (sigma 0.1-2), solarization as a 256-entry ``lookup_table``,
``flip``. ``equalization`` has no DALI equivalent (:data:`DALI_OPS`): it, or an op the installed
DALI lacks, stops with a one-line error naming the augmentation key.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from solo_ext.data.decode import decode_rgb_tensor
from solo_ext.data.folders import ImageSamples
from solo_ext.data.info import DATASETS
from solo_ext.data.tensor_pipeline import BLUR_SIGMA, SOLARIZE_THRESHOLD
from solo_ext.utils.errors import DataError
from solo_ext.utils.seeds import epoch_seed

# batches DALI prepares ahead of the one being consumed
PREFETCH = 2
INSTALL_HINT = 'pip install -e ".[dali]" (package nvidia-dali-cuda120)'
# The DALI operator behind each augmentation key; None: DALI has no equivalent. Its
# fn.equalize is OpenCV's histogram equalisation, not PIL's ImageOps.equalize (another lookup
# table: on 32-px crops of a photograph it brightens the blue channel by ~20 grey levels more),
# so equalization is refused rather than silently changed.
DALI_OPS = {
    "rrc": "random_resized_crop",
    "color_jitter": "color_twist",
    "grayscale": "color_twist",
    "gaussian_blur": "gaussian_blur",
    "solarization": "lookup_table",
    "equalization": None,
    "horizontal_flip": "flip",
}


def dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # no "nvidia" parent package / broken namespace
        return False


def dali_unsupported(aug: Mapping) -> tuple[str, str, str] | None:
    """(section, field, why) of the first augmentation of the filled entry ``aug`` switched on
    that DALI cannot do (:data:`DALI_OPS`), or None; the config layer refuses it."""
    from nvidia.dali import fn

    for section, op in DALI_OPS.items():
        active = aug[section]["enabled"] if section == "rrc" else aug[section]["prob"] > 0
        if not active or (op is not None and hasattr(fn, op)):
            continue
        lacks = (
            f"the installed DALI has no fn.{op}"
            if op is not None
            else f"DALI has no {section} equal to PIL's (fn.equalize maps the histogram differently)"
        )
        return section, "enabled" if section == "rrc" else "prob", lacks
    return None


class EpochShards:
    """Which dataset positions each rank reads in each epoch (see the module docstring).

    Args:
        num_samples: dataset size, >= 1 (the folder readers refuse a folder without images).
        batch_size: per rank, >= 1 (``optimizer.batch_size`` is a positive integer to the config).
        shuffle: draw a permutation per epoch from ``(seed, epoch)``; else dataset order.
        drop_last: drop each rank's last partial batch (training); else keep it (evaluation).
        seed: the run's seed.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch."""
        self.epoch = int(epoch)

    @staticmethod
    def rank_and_world() -> tuple[int, int]:
        # read when an epoch starts, not at construction: Lightning sets up the process group
        # after the loaders are built
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def per_rank(self) -> int:
        return math.ceil(self.num_samples / self.rank_and_world()[1])

    def __len__(self) -> int:
        """Steps per epoch, the same on every rank."""
        count = self.per_rank()
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def positions(self) -> list[int]:
        """This rank's positions for the current epoch, in order (``len(self)`` batches' worth)."""
        rank, world = self.rank_and_world()
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 0))
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank() * world
        order = (order * math.ceil(total / len(order)))[:total]  # wrap-around padding
        mine = order[rank:total:world]
        return mine[: len(self) * self.batch_size] if self.drop_last else mine


def _coin(probability: float):
    from nvidia.dali import fn, types

    return fn.random.coin_flip(probability=probability, dtype=types.BOOL)


def _rrc_window(rrc: Mapping) -> dict:
    """torchvision's RandomResizedCrop window: area fraction and log-uniform aspect ratio 3/4-4/3."""
    return {
        "random_area": [rrc["crop_min_scale"], rrc["crop_max_scale"]],
        "random_aspect_ratio": [3 / 4, 4 / 3],
    }


def _augment(images, aug: Mapping, cropped: bool = False):
    """One crop of the decoded HWC uint8 ``images`` through the entry ``aug`` -> CHW uint8;
    ``cropped``: the decoder already cut the random window, only the resize is left."""
    from nvidia.dali import fn, types

    size = aug["crop_size"]
    cubic = {"interp_type": types.INTERP_CUBIC, "antialias": True}
    if aug["rrc"]["enabled"] and not cropped:
        out = fn.random_resized_crop(images, size=[size, size], **_rrc_window(aug["rrc"]), **cubic)
    else:
        out = fn.resize(images, resize_x=size, resize_y=size, **cubic)
    jitter = aug["color_jitter"]
    if jitter["prob"] > 0:
        if _coin(jitter["prob"]):

            def factor(strength):
                return fn.random.uniform(range=[max(0.0, 1.0 - strength), 1.0 + strength])

            out = fn.color_twist(
                out,
                brightness=factor(jitter["brightness"]),
                contrast=factor(jitter["contrast"]),
                saturation=factor(jitter["saturation"]),
                # torchvision's hue is a fraction of the colour circle, DALI's is in degrees
                hue=fn.random.uniform(range=[-360.0 * jitter["hue"], 360.0 * jitter["hue"]]),
            )
    if aug["grayscale"]["prob"] > 0:
        if _coin(aug["grayscale"]["prob"]):
            out = fn.color_twist(out, saturation=0.0)
    if aug["gaussian_blur"]["prob"] > 0:
        if _coin(aug["gaussian_blur"]["prob"]):
            out = fn.gaussian_blur(out, sigma=fn.random.uniform(range=list(BLUR_SIGMA)))
    if aug["solarization"]["prob"] > 0:
        if _coin(aug["solarization"]["prob"]):
            keys = list(range(256))
            values = [k if k < SOLARIZE_THRESHOLD else 255 - k for k in keys]
            out = fn.lookup_table(out, keys=keys, values=values, dtype=types.UINT8)
    if aug["horizontal_flip"]["prob"] > 0:
        out = fn.flip(out, horizontal=fn.random.coin_flip(probability=aug["horizontal_flip"]["prob"]))
    return fn.transpose(out, perm=[2, 0, 1])


def _eval_crop(images, dataset: str, size: int, train: bool):
    """The fixed classification transforms of :func:`~solo_ext.data.augmentations.prepare_transforms`
    for image folders, HWC uint8 -> CHW uint8."""
    from nvidia.dali import fn, types

    cubic = {"interp_type": types.INTERP_CUBIC, "antialias": True}
    if train:
        out = fn.random_resized_crop(images, size=[size, size], random_area=[0.08, 1.0], **cubic)
        out = fn.flip(out, horizontal=fn.random.coin_flip(probability=0.5))
    elif DATASETS[dataset].image_size is None:
        out = fn.resize(images, resize_shorter=round(size * 256 / 224), **cubic)
        out = fn.crop(out, crop=[size, size])  # centred
    elif size != DATASETS[dataset].image_size:
        out = fn.resize(images, resize_x=size, resize_y=size, **cubic)
    else:
        out = images
    return fn.transpose(out, perm=[2, 0, 1])


class EvalCrop(NamedTuple):
    """A classification loader's fixed transform: ``dataset``'s train (``train``) or val
    transform at ``crop_size`` (see :func:`_eval_crop`)."""

    dataset: str
    crop_size: int
    train: bool


class DaliLoader:
    """An iterable of batches decoded and augmented by DALI (see the module docstring).

    Args:
        samples: the images (paths) and targets, from :mod:`solo_ext.data.folders`.
        batch_size: per rank.
        num_threads: DALI worker threads (``data.num_workers``, at least 1).
        seed: the run's seed.
        augmentations: pretraining: the filled ``augmentations`` entries; each image yields
            ``num_crops`` crops per entry and batches are ``[indexes, crops, targets]``.
            Classification: an :class:`EvalCrop`; batches are ``[x, y]``.
        hide_labels: every target -1 (``data.no_labels``).
    """

    def __init__(
        self,
        samples: ImageSamples,
        batch_size: int,
        num_threads: int,
        seed: int,
        *,
        augmentations: Sequence[Mapping] | EvalCrop,
        hide_labels: bool = False,
    ) -> None:
        # DALI installed and every augmentation one DALI has: checked by the config layer
        eval_crop = augmentations if isinstance(augmentations, EvalCrop) else None
        self.files = [str(p) for p in samples.images]
        self.targets = torch.tensor([-1 if hide_labels else t for t in samples.targets], dtype=torch.long)
        augs = None if isinstance(augmentations, EvalCrop) else [dict(a) for a in augmentations]
        self.augmentations, self.eval_crop = augs, eval_crop
        train = eval_crop is None or eval_crop.train
        self.batch_size, self.num_threads, self.seed = batch_size, max(1, num_threads), seed
        self.single_random_crop = (
            augs is not None and sum(a["num_crops"] for a in augs) == 1 and augs[0]["rrc"]["enabled"]
        )
        # Lightning finds set_epoch here, as on a DataLoader's sampler, and reads batch_sampler
        self.sampler = EpochShards(len(self.files), batch_size, shuffle=train, drop_last=train, seed=seed)
        self.batch_sampler = None

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def use_gpu(self) -> bool:
        return torch.cuda.is_available()

    def _build(self, positions: list[int], rank: int):
        from nvidia.dali import fn, pipeline_def, types

        batch = self.batch_size
        files = self.files

        def source(info):
            chunk = positions[info.iteration * batch : (info.iteration + 1) * batch]
            if not chunk:
                raise StopIteration
            return [np.fromfile(files[i], dtype=np.uint8) for i in chunk]

        device = "gpu" if self.use_gpu else "cpu"

        @pipeline_def(enable_conditionals=True)
        def pipeline():
            encoded = fn.external_source(source=source, batch=True, batch_info=True, no_copy=True)
            decoder = {"device": "mixed" if device == "gpu" else "cpu", "output_type": types.RGB}
            if self.single_random_crop:
                # One crop per image (MAE's recipe): the decoder cuts the random window and decodes
                # only the part of the JPEG it needs (solo-learn's DALI pipeline does the same).
                window = _rrc_window(self.augmentations[0]["rrc"])
                images = fn.decoders.image_random_crop(encoded, **decoder, **window, num_attempts=10)
                return (_augment(images, self.augmentations[0], cropped=True),)
            images = fn.decoders.image(encoded, **decoder)
            if self.augmentations is None:
                return _eval_crop(images, *self.eval_crop)
            return tuple(_augment(images, aug) for aug in self.augmentations for _ in range(aug["num_crops"]))

        device_id = torch.cuda.current_device() if self.use_gpu else None
        seed = epoch_seed(self.seed, self.sampler.epoch, rank) % 2**31
        pipe = pipeline(
            batch_size=batch,
            num_threads=self.num_threads,
            device_id=device_id,
            seed=seed,
            prefetch_queue_depth=PREFETCH,
        )
        pipe.build()
        return pipe

    def _to_torch(self, tensor_list) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = tensor_list.as_tensor()
        device = torch.device("cuda", torch.cuda.current_device()) if self.use_gpu else torch.device("cpu")
        out = torch.empty(dense.shape(), dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device) if self.use_gpu else None
        feed_ndarray(dense, out, cuda_stream=stream)
        return out

    def _raise_for_bad_file(self, positions: list[int], step: int, exc: RuntimeError):
        """DALI's errors are pages long and name no file: find the file (in this batch or the
        ones prefetched after it) that our own decoder cannot read either, and name it."""
        ahead = positions[step * self.batch_size : (step + 1 + PREFETCH) * self.batch_size]
        for position in ahead:
            decode_rgb_tensor(self.files[position])  # DataError: cannot decode image '<file>': ...
        first_line = next((line for line in str(exc).splitlines() if "failure" in line or "rror" in line), "")
        raise DataError(
            f"DALI failed on a batch of {len(ahead)} files from '{self.files[ahead[0]]}' on, all of "
            f"which torchvision decodes: {first_line.strip()}"
        ) from exc

    def __iter__(self):
        rank, _ = self.sampler.rank_and_world()
        positions = self.sampler.positions()
        if not positions:
            return
        pipe = self._build(positions, rank)
        try:
            for step in range(len(self)):
                chunk = torch.tensor(positions[step * self.batch_size : (step + 1) * self.batch_size])
                try:
                    outputs = [self._to_torch(o) for o in pipe.run()]
                except RuntimeError as exc:
                    self._raise_for_bad_file(positions, step, exc)
                targets = self.targets[chunk]
                if self.augmentations is None:
                    yield [outputs[0], targets]
                else:
                    yield [chunk, outputs, targets]
        finally:
            del pipe


def dali_pretrain_loader(ds, augmentations: Sequence[Mapping], batch_size: int, num_workers: int, seed: int):
    """A :class:`DaliLoader` over a pretraining set from
    :func:`~solo_ext.data.datasets.prepare_pretrain_dataset` (an ``IndexedDataset`` of an image
    folder)."""
    return DaliLoader(
        ds.base, batch_size, num_workers, seed, augmentations=augmentations, hide_labels=ds.hide_labels
    )


def dali_classification_loader(
    ds: ImageSamples, dataset: str, crop_size: int, batch_size: int, num_workers: int, seed: int, train: bool
):
    """A :class:`DaliLoader` of ``[x, y]`` batches through the fixed train or val transform."""
    return DaliLoader(ds, batch_size, num_workers, seed, augmentations=EvalCrop(dataset, crop_size, train))
