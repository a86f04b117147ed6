"""Throughput of solo-ext's MAE pretraining, measured in one run on one machine, one model, one batch.

What it measures (each ``--repeats`` times, interleaved so that load from other processes on a
shared machine hits every variant alike; the best run is kept, since contention only adds time):

1. images/s of the full Lightning training step (``Trainer.fit`` built by
   :func:`solo_ext.run.common.build_trainer`, ``limit_train_batches`` = warm-up + timed steps) for
   ``MAE`` and ``MAERegularized`` with uniformity, TCR, MAGMA (block depth-2 -> last block) alone
   and all three on;
2. the same MAE trained by a bare PyTorch loop (encoder + decoder + ``mae_loss_func`` + AdamW),
   and the plugin's overhead as Lightning time / bare time;
3. each regularizer's cost as its step time / the plain Lightning MAE step time;
4. images/s of the pretraining data loaders (digits in memory; a folder of PNGs) against the model;
5. model FLOPs per image (``FlopCounterMode`` over one forward+backward) and the achieved fraction
   of the machine's matmul rate (a ``torch.mm`` probe in the same run);
6. the loader back-ends on photographs at ImageNet size (``--only-loaders`` runs this part alone):
   images/s per core (``num_workers=0``, one torch thread, DALI ``num_threads=1``) of the MAE
   augmentation at 224 px (RandomResizedCrop 0.08-1 + flip) through the PIL pipeline (the
   baseline), the tensor pipeline (``transforms.v2`` on uint8; its device normalisation timed on
   this CPU in a row of its own) and DALI's CPU back-end when installed, each as a ratio of the
   PIL rate of the same run; and, per back-end, the share of a short training run's step time
   (a 2-block ViT at 224 px, patch 32) spent waiting for data. The photographs are crops of the
   ones scikit-learn (and scikit-image, when installed) ship, resized to 500 x 375 and saved as
   JPEG quality 90 in four class folders, or ``--photo-folder``, any ImageFolder.

Every model and loader is built from a config through :func:`solo_ext.config.pretrain.parse_cfg`, so
the real code path runs. The model defaults to the CIFAR recipe's architecture
(``scripts/pretrain/cifar/mae.yaml``: ViT-S/4 at 32 px, decoder 512 x 8 x 16); ``--tiny`` swaps in
a 2-block ViT for a smoke run.

Every training variant (Lightning and bare) consumes the same pre-made batches, drawn once from
the digits loader, so the step timings exclude data loading; the loader is timed on its own (4).

Usage::

    python bench/benchmark.py                      # CPU, batch 32
    python bench/benchmark.py --device cuda --batch-size 256 --steps 20 --warmup 5
    python bench/benchmark.py --tiny --steps 2 --warmup 1 --json out.json
    python bench/benchmark.py --only-loaders --repeats 3       # section 6 alone
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from solo_ext.backbones import build_backbone
from solo_ext.config.pretrain import parse_cfg
from solo_ext.data import (
    build_transform_pipeline,
    dataset_mean_std,
    fill_augmentation_defaults,
    prepare_pretrain_dataset,
)
from solo_ext.data.augmentations import FullTransformPipeline, NCropAugmentation
from solo_ext.data.dali import dali_installed
from solo_ext.data.loaders import prepare_dataloader
from solo_ext.data.tensor_pipeline import normalize_images
from solo_ext.losses.mae import mae_loss_func
from solo_ext.methods import METHODS
from solo_ext.run.pretrain import build_pretrain_loaders, build_trainer

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "scripts" / "pretrain" / "cifar" / "mae.yaml"
RECIPE_AUGMENTATION = REPO / "scripts" / "pretrain" / "cifar" / "augmentations" / "reconstruction.yaml"

TINY_BACKBONE = {
    "name": "vit_tiny",
    "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
}
TINY_DECODER = {"decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2}

# Weights as in the CIFAR recipes (u-mae / tcr-mae / magma-mae); any weight > 0 computes the term.
UNIFORMITY = {"weight": 0.01}
TCR = {"weight": 0.01, "mu": 1.0}
MAGMA_WEIGHT = 1.0

NUM_FOLDER_IMAGES = 512
PHOTO_SIZE = (500, 375)  # an average ImageNet training image, landscape (every 4th portrait)
PHOTO_CROP = 224
# the ImageNet MAE recipe's augmentation (scripts/pretrain/imagenet-100/augmentations/reconstruction.yaml)
PHOTO_AUGMENTATION = {
    "rrc": {"crop_min_scale": 0.08},
    "horizontal_flip": {"prob": 0.5},
    "crop_size": PHOTO_CROP,
}
PHOTO_BACKBONE = {
    "name": "vit_tiny",
    "kwargs": {"img_size": PHOTO_CROP, "patch_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2},
}
PIL_ROW, TENSOR_ROW = "PIL (baseline)", "tensor / transforms.v2"
TENSOR_CPU_NORM_ROW, DALI_ROW = "tensor + normalise on this CPU", "DALI, CPU back-end"
MATMUL_SIZE = 1024
BARE = "bare PyTorch MAE loop"
LIGHTNING = "Lightning MAE"


# ---------------------------------------------------------------------------------------- configs
def recipe_parts(tiny: bool) -> dict:
    """Backbone, method kwargs, optimizer, scheduler and augmentation of the CIFAR MAE recipe."""
    recipe = OmegaConf.to_container(OmegaConf.load(RECIPE), resolve=True)
    augmentations = OmegaConf.to_container(OmegaConf.load(RECIPE_AUGMENTATION), resolve=True)
    parts = {key: recipe[key] for key in ("backbone", "method_kwargs", "optimizer", "scheduler")}
    parts["augmentations"] = augmentations
    if tiny:
        parts["backbone"] = copy.deepcopy(TINY_BACKBONE)
        parts["method_kwargs"].update(TINY_DECODER)
    # The lr schedule does not change the cost of a step; a warm-up longer than the one-epoch
    # benchmark run would be rejected by parse_cfg.
    parts["scheduler"]["warmup_epochs"] = 0
    return parts


def bench_cfg(args, parts: dict, method: str, regularizers: dict | None, **top) -> dict:
    """A pretraining config (the raw dict ``parse_cfg`` checks) for one benchmark variant."""
    method_kwargs = copy.deepcopy(parts["method_kwargs"])
    if regularizers is not None:
        method_kwargs["regularizers"] = copy.deepcopy(regularizers)
    cfg = {
        "name": "benchmark",
        "method": method,
        "backbone": copy.deepcopy(parts["backbone"]),
        "method_kwargs": method_kwargs,
        "data": {"dataset": "digits", "num_workers": args.num_workers},
        "augmentations": copy.deepcopy(parts["augmentations"]),
        "optimizer": {**copy.deepcopy(parts["optimizer"]), "batch_size": args.batch_size},
        "scheduler": copy.deepcopy(parts["scheduler"]),
        "knn_eval": {"enabled": False},
        "checkpoint": {"enabled": False, "dir": str(args.workdir / "trained_models")},
        "auto_resume": {"enabled": False},
        "wandb": {"enabled": False},
        "max_epochs": 1,
        "accelerator": "gpu" if args.device == "cuda" else "cpu",
        "devices": 1,
        "strategy": "auto",
        "precision": args.precision,
        "limit_train_batches": args.warmup + args.steps,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    cfg.update(top)
    return cfg


def variants(depth: int) -> dict[str, tuple[str, dict | None]]:
    """Lightning variants: row name -> (method, regularizers)."""
    # MAGMA's CIFAR recipe regularizes the last block with block 10 of 12, i.e. depth - 2.
    magma = {"layers": [max(depth - 2, 0)], "weight": MAGMA_WEIGHT}
    return {
        LIGHTNING: ("mae", None),
        f"{LIGHTNING} + uniformity": ("mae-reg", {"uniformity": UNIFORMITY}),
        f"{LIGHTNING} + tcr": ("mae-reg", {"tcr": TCR}),
        f"{LIGHTNING} + magma": ("mae-reg", {"magma": magma}),
        f"{LIGHTNING} + all three": ("mae-reg", {"uniformity": UNIFORMITY, "tcr": TCR, "magma": magma}),
    }


def build_model(cfg) -> pl.LightningModule:
    torch.manual_seed(cfg.seed)  # same initial weights for every variant
    return METHODS[cfg.method](cfg)


# ---------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """``time.perf_counter()`` at the end of every training batch (after the optimizer step)."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device = device
        self.warmup = warmup
        self.start: float | None = None
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        synchronize(self.device)
        self.ends.append(time.perf_counter())

    def timed_seconds(self) -> float:
        """Wall time of the steps after the warm-up, Lightning's loop between them included."""
        first = self.ends[self.warmup - 1] if self.warmup else self.start
        return self.ends[-1] - first


class DataWait(StepTimer):
    """Time from the end of one step to the start of the next: the wait for the loader."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        super().__init__(device, warmup)
        self.waits: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if self.ends and len(self.ends) >= self.warmup:
            self.waits.append(time.perf_counter() - self.ends[-1])


class PremadeBatches(Dataset):
    """Already collated batches, handed out as they are (``DataLoader(batch_size=None)``)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]


def lightning_seconds(args, cfg_dict: dict, batches: list, plugins: list | None = None, fitted=None) -> float:
    """Seconds for ``args.steps`` training steps of a real ``Trainer.fit``, after the warm-up.
    ``plugins``: handed to the Trainer (build_trainer's seam); ``fitted``: a list that receives
    the trained model."""
    cfg = parse_cfg(cfg_dict, plugins)
    model = build_model(cfg)
    timer = StepTimer(args.torch_device, args.warmup)
    run_dir = Path(tempfile.mkdtemp(dir=args.workdir))
    trainer = build_trainer(cfg, run_dir, run_dir.name, [timer], plugins)
    trainer.fit(model, DataLoader(PremadeBatches(batches), batch_size=None))
    if fitted is not None:
        fitted.append(model)
    if len(timer.ends) != args.warmup + args.steps:
        raise RuntimeError(f"Lightning ran {len(timer.ends)} steps, expected {args.warmup + args.steps}")
    return timer.timed_seconds()


def mae_forward_backward(model, images: torch.Tensor) -> torch.Tensor:
    """The MAE objective without Lightning: masked encoder, decoder, reconstruction loss, backward."""
    out = model.backbone.forward_features(images, mask_ratio=model.mask_ratio)
    pred = model.decoder(out.tokens, out.ids_restore)
    loss = mae_loss_func(images, pred, out.mask, model.patch_size, model.norm_pix_loss)
    loss.backward()
    return loss


def bare_optimizer(model, cfg) -> torch.optim.Optimizer:
    """AdamW on encoder + decoder with the recipe's lr, weight decay and betas (foreach, as
    :func:`solo_ext.optim.factory.build_optimizer` sets it)."""
    params = [p for p in (*model.backbone.parameters(), *model.decoder.parameters()) if p.requires_grad]
    kwargs = OmegaConf.to_container(cfg.optimizer.kwargs)
    return torch.optim.AdamW(
        params, lr=cfg.derived.lr, weight_decay=cfg.optimizer.weight_decay, foreach=True, **kwargs
    )


def autocast(args):
    return torch.autocast(
        args.torch_device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"
    )


def bare_seconds(args, cfg_dict: dict, batches: list) -> float:
    """Seconds for ``args.steps`` steps of a plain PyTorch loop on the same model and batches."""
    cfg = parse_cfg(cfg_dict)
    device = args.torch_device
    model = build_model(cfg).to(device).train()
    optimizer = bare_optimizer(model, cfg)
    start = None
    for step, (_, crops, _) in enumerate(batches):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        images = crops[0].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(args):
            mae_forward_backward(model, images)
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def flops_per_image(args, cfg_dict: dict, batch) -> float:
    """FLOPs of one MAE training forward+backward divided by the batch size."""
    cfg = parse_cfg(cfg_dict)
    model = build_model(cfg).to(args.torch_device).train()
    images = batch[1][0].to(args.torch_device)
    counter = FlopCounterMode(display=False)
    # The fused CPU attention kernel has no FLOP formula; the math backend computes the same
    # products as counted matmuls.
    with sdpa_kernel(SDPBackend.MATH), counter, autocast(args):
        mae_forward_backward(model, images)
    return counter.get_total_flops() / images.shape[0]


def matmul_flops_per_second(args) -> float:
    """Measured rate of ``torch.mm`` on MATMUL_SIZE² float32 matrices."""
    device = args.torch_device
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    iterations = 200 if device.type == "cuda" else 20
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        torch.mm(a, b)
    synchronize(device)
    return 2 * MATMUL_SIZE**3 * iterations / (time.perf_counter() - start)


def loader_images_per_second(loader, max_batches: int, on_batch=None) -> float:
    """Images/s of one pass over ``loader`` (at most ``max_batches``), its first batch excluded
    (worker start-up, DALI's pipeline build); ``on_batch(crops)`` is timed with it."""
    iterator = iter(loader)
    next(iterator)
    images, start = 0, time.perf_counter()
    for _, (_, crops, _) in zip(range(max_batches - 1), iterator, strict=False):
        if on_batch is not None:
            on_batch(crops)
        images += crops[0].shape[0]
    if images == 0:
        raise RuntimeError("the loader gave a single batch; lower --batch-size to time it")
    return images / (time.perf_counter() - start)


def write_png_folder(root: Path, count: int, size: int) -> None:
    """``count`` random ``size``-px RGB PNGs in two class folders (ImageFolder layout)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def write_photo_folder(root: Path, count: int) -> Path:
    """``count`` JPEGs (quality 90) of ``PHOTO_SIZE`` in 4 class folders: random crops (55-100% of
    the short side, 4:3) of the photographs scikit-learn ships (china, flower) and, when
    installed, scikit-image's (astronaut, coffee, chelsea, rocket, ...)."""
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    try:
        from skimage import data as skdata

        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left"):
            try:
                image = getattr(skdata, name)()
            except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
                continue
            if image.ndim == 3 and image.shape[2] == 3:
                photos.append(image)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        size = PHOTO_SIZE if i % 4 else PHOTO_SIZE[::-1]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.55, 1.0) * min(w / size[0], h / size[1])
        cw, ch = int(size[0] * scale), int(size[1] * scale)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        image = Image.fromarray(photo[y : y + ch, x : x + cw]).resize(size, Image.BICUBIC)
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:04d}.jpg", quality=90)
    return root


def photo_cfg(args, folder: Path, data_format: str) -> dict:
    """A tiny MAE at 224 px (patch 32) reading ``folder`` as ``custom`` in ``data_format``."""
    parts = {
        "backbone": PHOTO_BACKBONE,
        "method_kwargs": dict(TINY_DECODER),
        "optimizer": {"name": "adamw", "lr": 1.5e-4},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 0},
        "augmentations": [PHOTO_AUGMENTATION],
    }
    data = {"dataset": "custom", "train_path": str(folder), "format": data_format, "num_workers": 0}
    cfg = bench_cfg(args, parts, "mae", None, data=data, limit_train_batches=1.0)
    cfg["optimizer"]["batch_size"] = args.loader_batch_size
    cfg["precision"], cfg["accelerator"] = "32-true", "cpu"
    return cfg


def photo_loaders(args, folder: Path) -> dict:
    """Back-end row name -> its pretraining loader over ``folder``, one process, no workers."""
    aug = fill_augmentation_defaults(PHOTO_AUGMENTATION, "custom")
    pil = FullTransformPipeline([NCropAugmentation(build_transform_pipeline("custom", aug), 1)])
    pil_ds = prepare_pretrain_dataset("custom", pil, str(folder), "image_folder")
    loaders = {PIL_ROW: prepare_dataloader(pil_ds, args.loader_batch_size, 0, generator=torch.Generator())}
    loaders[TENSOR_ROW], _ = build_pretrain_loaders(parse_cfg(photo_cfg(args, folder, "image_folder")))
    if dali_installed():
        loaders[DALI_ROW], _ = build_pretrain_loaders(parse_cfg(photo_cfg(args, folder, "dali")))
    return loaders


def data_wait_share(args, loader) -> float:
    """Share of step time spent waiting for ``loader``'s batches in one epoch of a tiny MAE."""
    cfg = parse_cfg(photo_cfg(args, Path("."), "image_folder"))
    waiter = DataWait(torch.device("cpu"), warmup=1)  # the first step builds and warms up
    run_dir = Path(tempfile.mkdtemp(dir=args.workdir))
    trainer = build_trainer(cfg, run_dir, run_dir.name, [waiter])
    trainer.fit(build_model(cfg), loader)
    return sum(waiter.waits) / waiter.timed_seconds()


def run_loaders(args) -> dict:
    """Section 6: per-core images/s of each back-end and its share of data waiting in training."""
    folder = args.photo_folder or write_photo_folder(args.workdir / "photos", args.photos)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaders = photo_loaders(args, folder)
        aug = fill_augmentation_defaults(PHOTO_AUGMENTATION, "custom")
        mean, std = (torch.tensor(v) for v in dataset_mean_std("custom", aug))

        def normalise_on_cpu(crops):
            for x in crops:
                normalize_images(x, mean, std)

        timed = dict(loaders)
        timed[TENSOR_CPU_NORM_ROW] = loaders[TENSOR_ROW]
        rates: dict[str, list[float]] = {name: [] for name in timed}
        batches = max(2, len(loaders[PIL_ROW]))
        for loader in loaders.values():  # untimed: the files into the page cache, lazy set-ups
            loader_images_per_second(loader, batches)
        for _ in range(args.repeats):
            for name, loader in timed.items():
                hook = normalise_on_cpu if name == TENSOR_CPU_NORM_ROW else None
                rates[name].append(loader_images_per_second(loader, batches, hook))
        waits = {name: data_wait_share(args, loader) for name, loader in loaders.items()}
    finally:
        torch.set_num_threads(threads)
    best = {name: max(values) for name, values in rates.items()}
    return {
        "folder": str(folder),
        "images": sum(1 for _ in Path(folder).rglob("*") if _.is_file()),
        "batch_size": args.loader_batch_size,
        "rows": {
            name: {
                "images_per_second_per_core": best[name],
                "vs_pil": best[name] / best[PIL_ROW],
                "rates_per_repeat": rates[name],
                "data_wait_share": waits.get(name),
            }
            for name in timed
        },
        "dali_installed": dali_installed(),
    }


def format_loader_table(section: dict) -> str:
    lines = [
        f"loaders: {section['images']} photographs in {section['folder']}, batch {section['batch_size']}, "
        f"MAE augmentation at {PHOTO_CROP} px, num_workers 0, 1 torch thread, DALI num_threads 1",
        f"{'back-end':<42} {'img/s/core':>10} {'vs PIL':>8} {'data wait':>10}",
    ]
    for name, row in section["rows"].items():
        wait = "" if row["data_wait_share"] is None else f"{row['data_wait_share']:.0%}"
        lines.append(
            f"{name:<42} {row['images_per_second_per_core']:>10.1f} {row['vs_pil']:>8.2f} {wait:>10}".rstrip()
        )
    if not section["dali_installed"]:
        lines.append('(DALI not installed: pip install -e ".[dali]" adds its row)')
    return "\n".join(lines)


def take_batches(loader: DataLoader, count: int) -> list:
    batches = []
    while len(batches) < count:
        for batch in loader:
            batches.append(batch)
            if len(batches) == count:
                break
    return batches


# ---------------------------------------------------------------------------------------- report
def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Other processes on a shared machine slow every measurement down; the load says how busy.
        "load_average_1min": os.getloadavg()[0],
    }


def run(args) -> dict:
    parts = recipe_parts(args.tiny)
    with torch.device("meta"):  # only the depth is needed: no memory, no init time
        depth = build_backbone(parts["backbone"]["name"], parts["backbone"]["kwargs"]).depth
    rows = variants(depth)
    cfg_of = {name: bench_cfg(args, parts, method, regs) for name, (method, regs) in rows.items()}
    mae_cfg = cfg_of[LIGHTNING]
    batch_size = args.batch_size

    # The same batches for every training variant, drawn once through the real digits pipeline.
    digits_loader, _ = build_pretrain_loaders(parse_cfg(mae_cfg))
    batches = take_batches(digits_loader, args.warmup + args.steps)

    seconds: dict[str, list[float]] = {BARE: [], **{name: [] for name in rows}}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
        seconds[BARE].append(bare_seconds(args, mae_cfg, batches))
        for name, cfg_dict in cfg_of.items():
            seconds[name].append(lightning_seconds(args, cfg_dict, batches))

    # Data loaders: the digits held in memory, and a folder of PNGs decoded on access.
    folder = args.workdir / "png_folder"
    write_png_folder(folder, NUM_FOLDER_IMAGES, 32)
    folder_cfg = bench_cfg(
        args,
        parts,
        "mae",
        None,
        data={
            "dataset": "custom",
            "train_path": str(folder),
            "format": "image_folder",
            "num_workers": args.num_workers,
        },
    )
    folder_loader, _ = build_pretrain_loaders(parse_cfg(folder_cfg))
    loader_rates = {"digits": [], "image_folder": []}
    for _ in range(args.repeats):
        loader_rates["digits"].append(loader_images_per_second(digits_loader, args.loader_batches))
        loader_rates["image_folder"].append(loader_images_per_second(folder_loader, args.loader_batches))

    flops = flops_per_image(args, mae_cfg, batches[0])
    matmul = max(matmul_flops_per_second(args) for _ in range(args.repeats))

    step_seconds = {name: min(values) / args.steps for name, values in seconds.items()}
    ips = {name: batch_size / s for name, s in step_seconds.items()}
    results = {
        "settings": {
            "device": args.device,
            "precision": args.precision,
            "batch_size": batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "num_workers": args.num_workers,
            "tiny": args.tiny,
            "backbone": parts["backbone"],
            "decoder": {k: parts["method_kwargs"][k] for k in TINY_DECODER},
            "magma_layers": rows[f"{LIGHTNING} + magma"][1]["magma"]["layers"],
        },
        "train": {
            name: {
                "images_per_second": ips[name],
                "ms_per_step": 1000 * step_seconds[name],
                "seconds_per_repeat": seconds[name],
            }
            for name in seconds
        },
        "plugin_overhead": step_seconds[LIGHTNING] / step_seconds[BARE],
        "regularizer_cost": {
            name: step_seconds[name] / step_seconds[LIGHTNING] for name in rows if name != LIGHTNING
        },
        "loaders": {
            name: {
                "images_per_second": max(rates),
                "vs_lightning_mae": max(rates) / ips[LIGHTNING],
                "rates_per_repeat": rates,
            }
            for name, rates in loader_rates.items()
        },
        "flops_per_image": flops,
        "matmul_flops_per_second": matmul,
        "achieved_fraction": {name: flops * ips[name] / matmul for name in (BARE, LIGHTNING)},
    }
    return results


def format_table(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    backbone = s["backbone"]
    dec = s["decoder"]
    lines = [
        f"machine: {m['processor']}, {m['cpu_count']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), python {m['python']}, gpu {m['gpu']}, "
        f"load average {m['load_average_1min']:.1f} at the end",
        f"model: {backbone['name']} {backbone['kwargs']}, decoder "
        f"{dec['decoder_embed_dim']}/{dec['decoder_depth']}/{dec['decoder_num_heads']}, "
        f"magma layers {s['magma_layers']} -> last block",
        f"run: device {s['device']}, precision {s['precision']}, batch {s['batch_size']}, "
        f"{s['steps']} timed steps after {s['warmup']} warm-up, best of {s['repeats']}, "
        f"loader workers {s['num_workers']}",
        "",
        f"{'measurement':<42} {'images/s':>10} {'ms/step':>10} {'ratio':>8}  compared with",
    ]
    train = results["train"]
    for name, row in train.items():
        if name == BARE:
            ratio, against = "", ""
        elif name == LIGHTNING:
            ratio, against = f"{results['plugin_overhead']:.3f}", "bare loop time (plugin overhead)"
        else:
            ratio, against = f"{results['regularizer_cost'][name]:.3f}", "Lightning MAE time"
        lines.append(
            f"{name:<42} {row['images_per_second']:>10.1f} {row['ms_per_step']:>10.1f} {ratio:>8}  {against}"
        )
    labels = {
        "digits": "loader digits (in memory)",
        "image_folder": f"loader image_folder ({NUM_FOLDER_IMAGES} PNG)",
    }
    for name, row in results["loaders"].items():
        lines.append(
            f"{labels[name]:<42} {row['images_per_second']:>10.1f} {'':>10} "
            f"{row['vs_lightning_mae']:>8.2f}  Lightning MAE images/s"
        )
    lines += [
        "",
        f"{'model FLOPs per image':<42} {results['flops_per_image'] / 1e9:>10.3f} GFLOP (forward+backward)",
        f"{'matmul probe':<42} {results['matmul_flops_per_second'] / 1e9:>10.1f} GFLOP/s "
        f"(torch.mm {MATMUL_SIZE}x{MATMUL_SIZE} float32)",
    ]
    for name, fraction in results["achieved_fraction"].items():
        lines.append(f"{'achieved fraction, ' + name:<42} {fraction:>10.3f} of the matmul rate")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--loader-batches", type=int, default=40, help="batches per loader pass")
    parser.add_argument("--tiny", action="store_true", help="a 2-block ViT for a fast smoke run")
    parser.add_argument("--only-loaders", action="store_true", help="run the loader back-end section alone")
    parser.add_argument("--photo-folder", type=Path, help="ImageFolder of photos, loader section")
    parser.add_argument("--photos", type=int, default=200, help="photos to write without a folder")
    parser.add_argument("--loader-batch-size", type=int, default=32, help="batch of the loader section")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    for key in ("batch_size", "steps", "repeats", "threads", "loader_batches"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.num_workers < 0:
        parser.error("--warmup and --num-workers must be >= 0")
    if args.loader_batches < 2:
        parser.error("--loader-batches must be >= 2 (the first batch is not timed)")
    args.torch_device = torch.device(args.device)
    return args


def quiet_lightning() -> None:
    # Lightning's start-up banner and its hints about loader workers would bury the table.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    with tempfile.TemporaryDirectory(prefix="solo_ext_bench_") as workdir:
        args.workdir = Path(workdir)
        results = {} if args.only_loaders else run(args)
        results["loader_backends"] = run_loaders(args)
    results["machine"] = machine()
    if not args.only_loaders:
        print(format_table(results))
        print()
    print(format_loader_table(results["loader_backends"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
