"""One script that measures solo-ext's training step on a GPU, in at most about 8 minutes.

    python bench/gpu_check.py                       # on a GPU machine: ViT-B/16 at 224, bf16
    python bench/gpu_check.py --smoke               # the same code paths on the CPU, tiny ViT, < 1 min

What it prints as a table and writes as JSON (``--out``, default ``gpu_check.json``):

1. MAE ViT-B/16 at 224 px (scripts/pretrain/imagenet/mae.yaml's model), bf16-mixed, the largest
   batch up to 256 that fits: images/s of the real Lightning training step (solo_ext's Trainer,
   method and optimizer; batches already on the device), eager and with ``compile: True``;
2. model FLOPs per image (FlopCounterMode over one forward+backward) and MFU against the
   device's dense bf16 peak (:data:`PEAK_BF16`; H100/H200 SXM 989 TFLOP/s);
3. peak GPU memory of each variant;
4. each regularizer's step-time ratio to plain MAE (uniformity, TCR, MAGMA), eager;
5. 200 steps with all three regularizers on, finite (the non-finite guard would stop the run);
   the same steps at ``16-mixed`` (fp16 with torch's GradScaler, as on V100/T4 GPUs): finite, and
   how many steps the scaler skipped and its final scale (on the CPU, ``--smoke`` injects
   Lightning's MixedPrecision plugin with a CPU GradScaler, the same code);
6. the share of step time spent waiting for data with the real loader (solo_ext's image_folder
   pipeline, PIL + workers) on generated JPEGs of ImageNet size;
7. when two GPUs are present, one 2-process DDP fit of ``main_pretrain.py`` on those JPEGs.

``--smoke`` swaps in a 2-block ViT at 32 px, batch 8, a handful of steps and small JPEGs, and runs
on the CPU, so that a test can run the script and it cannot rot.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import (  # noqa: E402  (bench/ is not a package)
    TINY_BACKBONE,
    TINY_DECODER,
    DataWait,
    bench_cfg,
    flops_per_image,
    lightning_seconds,
    machine,
)

from solo_ext.config.pretrain import parse_cfg  # noqa: E402
from solo_ext.eval.diagnostics import atomic_output  # noqa: E402
from solo_ext.run.pretrain import build_pretrain_loaders, build_trainer  # noqa: E402
from solo_ext.utils.quiet import quiet_libraries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "scripts" / "pretrain" / "imagenet" / "mae.yaml"
RECIPE_AUGMENTATION = REPO / "scripts" / "pretrain" / "imagenet" / "augmentations" / "reconstruction.yaml"

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets; matched
# against torch.cuda.get_device_name in this order.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)
# MAE ViT-B/16 at 224, 75% masking, decoder 512 x 8: the published cost of a training step
PAPER_GFLOP_PER_IMAGE = 58.7
REGULARIZERS = {
    "uniformity": {"uniformity": {"weight": 0.00125}},
    "tcr": {"tcr": {"weight": 0.00125, "mu": 3.0}},
    "magma": {"magma": {"layers": [-2], "weight": 1.0}},  # block 10 of 12, as MAGMA
}


def peak_flops(name: str | None) -> float | None:
    if name is None:
        return None
    for key, peak in PEAK_BF16:
        if key in name:
            return peak
    return None


def parts(smoke: bool) -> dict:
    recipe = OmegaConf.to_container(OmegaConf.load(RECIPE), resolve=True)
    out = {key: recipe[key] for key in ("backbone", "method_kwargs", "optimizer", "scheduler")}
    out["augmentations"] = OmegaConf.to_container(OmegaConf.load(RECIPE_AUGMENTATION), resolve=True)
    out["scheduler"]["warmup_epochs"] = 0
    if smoke:
        out["backbone"] = copy.deepcopy(TINY_BACKBONE)
        out["method_kwargs"].update(TINY_DECODER)
        for aug in out["augmentations"]:
            aug["crop_size"] = 32
    return out


def device_batches(args, count: int) -> list:
    """``count`` batches ``[indexes, [images], targets]`` already on the device: the step is timed
    without host-to-device copies or data loading (the loader is measured on its own)."""
    size = args.image_size
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(args.batch_size, 3, size, size, generator=generator).to(args.torch_device)
    targets = torch.randint(0, 10, (args.batch_size,), generator=generator).to(args.torch_device)
    indexes = torch.arange(args.batch_size, device=args.torch_device)
    return [[indexes, [images], targets] for _ in range(count)]


def timed_fit(args, regularizers: dict | None, compiled: bool, steps: int | None = None) -> dict:
    """images/s and peak memory of ``steps`` timed Lightning steps (after ``args.warmup``)."""
    method = "mae" if regularizers is None else "mae-reg"
    run_args = copy.copy(args)
    if steps is not None:
        run_args.steps = steps
    cfg = bench_cfg(run_args, args.parts, method, regularizers, compile=compiled)
    if args.torch_device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = lightning_seconds(run_args, cfg, device_batches(args, run_args.warmup + run_args.steps))
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.torch_device.type == "cuda" else None
    return {"images_per_s": run_args.steps * args.batch_size / seconds, "peak_gib": peak}


def fp16_check(args, regularizers: dict) -> dict:
    """All regularizers at ``16-mixed`` for ``args.finite_steps`` steps with a real GradScaler (on
    the CPU through Lightning's plugin); the guard raises if a loss or the scaler diverges."""
    run_args = copy.copy(args)
    run_args.precision, run_args.steps = "16-mixed", args.finite_steps
    cfg = bench_cfg(run_args, args.parts, "mae-reg", regularizers)
    plugins = None
    if args.torch_device.type != "cuda":
        plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]
    fitted: list = []
    batches = device_batches(args, run_args.warmup + run_args.steps)
    seconds = lightning_seconds(run_args, cfg, batches, plugins, fitted)
    guard = fitted[0].guard
    logs = guard.scaler_logs()
    return {
        "steps": run_args.warmup + run_args.steps,
        "finite": True,
        "images_per_s": run_args.steps * args.batch_size / seconds,
        "skipped_steps": int(logs["amp_skipped_steps"]) if logs else 0,
        "final_scale": float(logs["amp_scale"]) if logs else None,
    }


def largest_batch(args) -> int:
    """The largest batch up to ``args.batch_size`` (halving) whose eager step fits in memory."""
    while True:
        try:
            probe = copy.copy(args)
            probe.warmup, probe.steps = 1, 1
            timed_fit(probe, None, compiled=False)
            return args.batch_size
        except torch.OutOfMemoryError:
            if args.batch_size == 1:
                raise
            args.batch_size //= 2
            torch.cuda.empty_cache()


def write_jpeg_folder(root: Path, count: int, width: int, height: int) -> None:
    """Photograph-like JPEGs (smooth colour fields plus grain, so they compress as photos do) in
    two class folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(height // 25 + 1, width // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, size=(height, width, 3))
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def data_wait_share(args, folder: Path) -> dict:
    cfg_dict = bench_cfg(args, args.parts, "mae", None)
    cfg_dict["data"] = {
        "dataset": "custom",
        "train_path": str(folder),
        "format": "image_folder",
        "num_workers": args.num_workers,
    }
    cfg_dict["limit_train_batches"] = args.warmup + args.loader_steps
    cfg = parse_cfg(cfg_dict)
    from solo_ext.methods import METHODS

    model = METHODS["mae"](cfg)
    timer = DataWait(args.torch_device, args.warmup)
    run_dir = Path(tempfile.mkdtemp(dir=args.workdir))
    trainer = build_trainer(cfg, run_dir, run_dir.name, [timer])
    train_loader, _ = build_pretrain_loaders(cfg)
    trainer.fit(model, train_loader)
    total = timer.timed_seconds()
    wait = sum(timer.waits)
    steps = len(timer.ends) - args.warmup
    return {
        "data_wait_share": wait / total if total > 0 else None,
        "images_per_s_with_loader": steps * args.batch_size / total if total > 0 else None,
        "num_workers": args.num_workers,
    }


def ddp_check(args, folder: Path) -> dict | None:
    if args.torch_device.type != "cuda" or torch.cuda.device_count() < 2:
        return None
    command = [
        sys.executable,
        str(REPO / "main_pretrain.py"),
        "--config-path",
        str(RECIPE.parent),
        "--config-name",
        RECIPE.name,
        "data.dataset=custom",
        f"data.train_path={folder}",
        "data.val_path=null",
        f"data.num_workers={args.num_workers}",
        "devices=2",
        "max_epochs=1",
        "++limit_train_batches=5",
        "optimizer.batch_size=32",
        "knn_eval.enabled=False",
        "checkpoint.enabled=False",
        "auto_resume.enabled=False",
        "wandb.enabled=False",
        f"checkpoint.dir={args.workdir / 'ddp'}",
        "++enable_progress_bar=False",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=args.workdir, timeout=300)
    return {
        "ok": result.returncode == 0,
        "seconds": time.perf_counter() - start,
        "error_tail": None if result.returncode == 0 else result.stderr[-1500:],
    }


def run(args) -> dict:
    quiet_libraries()
    args.parts = parts(args.smoke)
    args.image_size = args.parts["augmentations"][0]["crop_size"]
    results: dict = {"machine": machine(), "smoke": args.smoke, "precision": args.precision}
    started = time.perf_counter()
    args.batch_size = largest_batch(args)
    results["batch_size"] = args.batch_size

    eager = timed_fit(args, None, compiled=False)
    compiled = timed_fit(args, None, compiled=True)
    cfg = parse_cfg(bench_cfg(args, args.parts, "mae", None))
    flops = flops_per_image(args, bench_cfg(args, args.parts, "mae", None), device_batches(args, 1)[0])
    peak = peak_flops(results["machine"]["gpu"])
    results["mae"] = {
        "eager": eager,
        "compiled": compiled,
        "flops_per_image": flops,
        "paper_gflop_per_image": PAPER_GFLOP_PER_IMAGE,
        "device_peak_bf16_flops": peak,
        "mfu_eager": None if peak is None else eager["images_per_s"] * flops / peak,
        "mfu_compiled": None if peak is None else compiled["images_per_s"] * flops / peak,
        "backbone": OmegaConf.to_container(cfg.backbone),
    }
    results["regularizer_step_time_ratio"] = {
        name: eager["images_per_s"] / timed_fit(args, regs, compiled=False)["images_per_s"]
        for name, regs in REGULARIZERS.items()
    }
    all_three = {k: v for regs in REGULARIZERS.values() for k, v in regs.items()}
    long_steps = args.finite_steps
    finite = timed_fit(args, all_three, compiled=False, steps=long_steps)  # the guard raises if not
    results["all_regularizers"] = {"steps": long_steps + args.warmup, "finite": True, **finite}
    results["fp16"] = fp16_check(args, all_three)

    folder = args.workdir / "jpegs"
    write_jpeg_folder(folder, args.jpegs, *args.jpeg_size)
    results["loader"] = data_wait_share(args, folder)
    results["ddp"] = ddp_check(args, folder)
    results["seconds"] = time.perf_counter() - started
    return results


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(r: dict) -> str:
    mae = r["mae"]
    rows = [
        ("device", r["machine"]["gpu"] or r["machine"]["processor"]),
        ("batch size (largest that fits, <= 256)", str(r["batch_size"])),
        ("MAE images/s, eager", fmt(mae["eager"]["images_per_s"], ".1f")),
        ("MAE images/s, torch.compile", fmt(mae["compiled"]["images_per_s"], ".1f")),
        (
            "model GFLOP per image (counted; paper 58.7 for ViT-B/16)",
            fmt(mae["flops_per_image"] / 1e9, ".4g"),
        ),
        (
            "MFU eager / compiled (dense bf16 peak)",
            f"{fmt(mae['mfu_eager'], '.1%')} / {fmt(mae['mfu_compiled'], '.1%')}",
        ),
        (
            "peak memory GiB eager / compiled",
            f"{fmt(mae['eager']['peak_gib'], '.1f')} / {fmt(mae['compiled']['peak_gib'], '.1f')}",
        ),
    ]
    rows += [
        (f"step-time ratio + {name} / MAE", fmt(ratio, ".3f"))
        for name, ratio in r["regularizer_step_time_ratio"].items()
    ]
    rows.append(
        (
            f"{r['all_regularizers']['steps']} steps, all three regularizers",
            "finite" if r["all_regularizers"]["finite"] else "NOT finite",
        )
    )
    fp16 = r["fp16"]
    rows.append(
        (
            f"{fp16['steps']} steps at 16-mixed (GradScaler), all three regularizers",
            f"finite, {fp16['skipped_steps']} skipped, scale {fmt(fp16['final_scale'], 'g')}",
        )
    )
    loader = r["loader"]
    rows.append(
        (
            f"data-wait share, real loader ({loader['num_workers']} workers)",
            fmt(loader["data_wait_share"], ".1%"),
        )
    )
    rows.append(("images/s with the real loader", fmt(loader["images_per_s_with_loader"], ".1f")))
    ddp = r["ddp"]
    rows.append(
        (
            "2-process DDP fit",
            "skipped (fewer than 2 GPUs)" if ddp is None else ("ok" if ddp["ok"] else "FAILED"),
        )
    )
    rows.append(("wall time, s", fmt(r["seconds"], ".0f")))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny ViT on the CPU, same code paths")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    args.device = "cuda" if cuda else "cpu"
    args.torch_device = torch.device(args.device)
    args.precision = "bf16-mixed"
    args.batch_size = 256 if cuda else 8
    args.warmup, args.steps = (5, 20) if cuda else (1, 2)
    args.finite_steps = 195 if cuda else 4
    args.loader_steps = 30 if cuda else 3
    args.jpegs = 2048 if cuda else 48
    args.jpeg_size = (500, 375) if cuda else (64, 48)
    args.num_workers = min(len(os.sched_getaffinity(0)), 16) if cuda else 0
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = Path(workdir)
        results = run(args)
    print(format_table(results))
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return results


if __name__ == "__main__":
    main()
