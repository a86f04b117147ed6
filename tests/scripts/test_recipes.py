"""Every shipped pretraining YAML, and every upstream recipe kept as a fixture, trains for two steps.

Each recipe is composed with Hydra's compose API exactly as ``main_pretrain.py`` would compose it
(its own ``augmentations/`` and ``wandb/`` groups), shrunk with command-line style overrides (a
16-wide ViT that keeps its 12 blocks so MAGMA's block 10 exists, batch 4, two steps, CPU, fp32) and
run through :func:`solo_ext.run.pretrain.run_pretrain` on a few real PNG/JPEG files written to tmp.

- CIFAR and STL-10 cannot be downloaded here: their recipes run with ``data.dataset=custom`` on an
  image folder at the recipe's own crop size.
- ImageNet-style recipes read an image folder; Tiny-ImageNet its archive's native layout.
- ``data.format: dali`` runs through DALI (its CPU back-end here) when the ``dali`` extra is
  installed; without it the run must stop with the one-line ConfigError naming the install command,
  and goes on with ``data.format=image_folder``.
- Regularizers that a schedule holds at 0 for the first epochs (MAGMA's warm-up) are started at
  epoch 0, so that their loss is computed and checked in the two steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from solo_ext.config.errors import ConfigError
from solo_ext.run.pretrain import run_pretrain

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "scripts" / "pretrain"
UPSTREAM = REPO / "tests" / "fixtures" / "upstream"
CONFIG_GROUPS = {"augmentations", "wandb"}
REGULARIZERS = ("uniformity", "tcr", "magma")
CLASSES = ("n01443537", "n01629819", "n01641577")
IMAGES_PER_CLASS = 4
IMAGE_SIZE = 32
# Tiny-ImageNet's images are all 64x64 and its val transform keeps them as stored.
TINY_IMAGENET_SIZE = 64
# The shipped ImageNet-size recipes (224 px, 196 patches per image) cost the most; the 32-96 px
# recipes of the other folders cover every regularizer and both config forms. The upstream
# fixtures stay in the quick set: they stand for the users' own files.
SLOW_FOLDERS = {"imagenet", "imagenet-100"}


def find_recipes(root: Path) -> list[Path]:
    """Every YAML below ``root`` that is a recipe, not a member of a config group folder."""
    return sorted(
        path for path in root.rglob("*.yaml") if not CONFIG_GROUPS & set(path.relative_to(root).parts[:-1])
    )


def recipe_params() -> list:
    params = []
    for prefix, root in (("scripts", SHIPPED), ("upstream", UPSTREAM)):
        for path in find_recipes(root):
            case_id = f"{prefix}/{path.relative_to(root).as_posix()}"
            marks = []
            if prefix == "scripts" and path.parent.name in SLOW_FOLDERS:
                marks.append(pytest.mark.slow)
            if OmegaConf.load(path).get("data", {}).get("format") == "dali":
                marks.append(pytest.mark.dali_format)
            params.append(pytest.param(path, [], id=case_id, marks=marks))
    # solo-learn's ImageNet-100 recipes other than MAE's read data.format "dali": its MAE recipe
    # in that format, through DALI
    solo_learn = UPSTREAM / "solo-learn" / "imagenet-100" / "mae.yaml"
    dali = [pytest.mark.dali]
    params.append(
        pytest.param(solo_learn, ["data.format=dali"], id="upstream/solo-learn/imagenet-100/dali", marks=dali)
    )
    return params


def write_image(path: Path, seed: int, size: int = IMAGE_SIZE) -> None:
    """A random RGB image, distinct per seed, in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def class_folders(root: Path, seed: int) -> Path:
    """``<root>/<class>/<i>.png``: ImageFolder layout."""
    for k, name in enumerate(CLASSES):
        for i in range(IMAGES_PER_CLASS):
            write_image(root / name / f"{i}.png", seed + 10 * k + i)
    return root


def tiny_imagenet_folders(root: Path) -> tuple[Path, Path]:
    """The Tiny-ImageNet archive's layout: ``train/<wnid>/images/<wnid>_<i>.JPEG`` and
    ``val/images/val_<i>.JPEG`` labelled by ``val/val_annotations.txt``."""
    train, val = root / "train", root / "val"
    lines = []
    for k, wnid in enumerate(CLASSES):
        for i in range(IMAGES_PER_CLASS):
            write_image(train / wnid / "images" / f"{wnid}_{i}.JPEG", 10 * k + i, TINY_IMAGENET_SIZE)
            name = f"val_{k * IMAGES_PER_CLASS + i}.JPEG"
            write_image(val / "images" / name, 100 + 10 * k + i, TINY_IMAGENET_SIZE)
            # Bounding boxes are not read; the 64x64 frame stands in for one.
            lines.append(f"{name}\t{wnid}\t0\t0\t{TINY_IMAGENET_SIZE - 1}\t{TINY_IMAGENET_SIZE - 1}")
    (val / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return train, val


def data_overrides(cfg: DictConfig, tmp_path: Path) -> list[str]:
    """Point the recipe's data keys at tiny real folders in ``tmp_path``."""
    dataset = cfg.data.dataset
    if dataset == "digits":  # ships with scikit-learn
        return []
    if dataset == "tiny-imagenet":
        train, val = tiny_imagenet_folders(tmp_path / "tiny-imagenet-200")
        return [f"data.train_path='{train}'", f"data.val_path='{val}'"]
    train = class_folders(tmp_path / "train", seed=0)
    val = class_folders(tmp_path / "val", seed=1000)
    paths = [f"data.train_path='{train}'", f"data.val_path='{val}'"]
    if dataset in ("cifar10", "cifar100", "stl10"):
        # No download here: the same recipe on an image folder, at its own crop size.
        return ["data.dataset=custom", *paths]
    return paths


def start_regularizers_now(cfg: DictConfig) -> list[str]:
    """Overrides that move every warm-up weight schedule to epoch 0 (MAGMA's start at epoch 3-10)."""
    mk = cfg.method_kwargs
    schedules = {
        f"method_kwargs.regularizers.{name}.scheduler": spec.get("scheduler")
        for name, spec in (mk.get("regularizers") or {}).items()
    }
    schedules["method_kwargs.reg_scheduler"] = mk.get("reg_scheduler")
    return [
        f"{key}.warmup_epochs=0"
        for key, schedule in schedules.items()
        if schedule is not None and schedule.get("name") == "warmup"
    ]


def expected_regularizers(cfg: DictConfig) -> set[str]:
    """Regularizers the recipe switches on, read from its keys (general form and MAGMA's)."""
    mk = cfg.method_kwargs
    names = set(mk.get("regularizers") or {})
    if cfg.method == "u-mae":  # MAGMA's u-mae: reg_scheduler weights the uniformity term
        if mk.get("reg_scheduler"):
            names.add("uniformity")
    else:
        if mk.get("layers"):
            names.add("magma")
        if mk.get("uniformity_weight"):
            names.add("uniformity")
    return names


def logged_values(rows: list[dict], key: str) -> list[float]:
    """Every value logged under ``key`` (Lightning's ``_step`` / ``_epoch`` variants included)."""
    columns = (key, f"{key}_step", f"{key}_epoch")
    return [float(row[c]) for row in rows for c in columns if row.get(c) not in (None, "")]


def dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # no "nvidia" parent package
        return False


@pytest.fixture
def one_thread():
    """The tiny model's ops take microseconds; on shared, busy cores the intra-op thread pool's
    synchronisation makes them ~50x slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_recipe(path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(path.parent), version_base="1.2"):
        return compose(config_name=path.name, overrides=overrides)


@pytest.mark.parametrize("recipe, extra", recipe_params())
def test_recipe_trains_two_steps(recipe: Path, extra: list[str], tmp_path: Path, one_thread) -> None:
    cfg = compose_recipe(recipe, extra)
    ckpt_dir = tmp_path / "trained_models"
    overrides = [
        "++backbone.kwargs.embed_dim=16",
        "++backbone.kwargs.num_heads=2",
        "++method_kwargs.decoder_embed_dim=16",
        "++method_kwargs.decoder_depth=1",
        "++method_kwargs.decoder_num_heads=2",
        "++optimizer.batch_size=4",
        "++max_epochs=1",
        # The recipes warm the lr up for 10 epochs; a 1-epoch run may not.
        "++scheduler.warmup_epochs=0",
        "++limit_train_batches=2",
        "++limit_val_batches=1",
        "++log_every_n_steps=1",
        "++accelerator=cpu",
        "++devices=1",
        "++strategy=auto",
        "++precision=32",
        "++wandb.enabled=False",
        f"++checkpoint.dir='{ckpt_dir}'",
        "++data.num_workers=0",
        "++auto_resume.enabled=False",
        *data_overrides(cfg, tmp_path),
        *start_regularizers_now(cfg),
        *extra,
    ]
    if cfg.data.get("format") == "dali" and not dali_installed():
        with pytest.raises(ConfigError, match=r"^data\.format='dali': NVIDIA DALI is not installed here; "):
            run_pretrain(compose_recipe(recipe, overrides))
        assert not ckpt_dir.exists(), "a config error must stop the run before anything is written"
        overrides.append("data.format=image_folder")

    trainer = run_pretrain(compose_recipe(recipe, overrides))

    assert trainer.global_step == 2
    run_dirs = list((ckpt_dir / cfg.method).iterdir())
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    assert list(run_dir.glob("*.ckpt")), f"no checkpoint in {run_dir}"
    args = json.loads((run_dir / "args.json").read_text())
    assert args["name"] == cfg.name and args["method"] == cfg.method

    with open(run_dir / "csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    active = expected_regularizers(cfg)
    for key in ["train_reconstruction_loss", *(f"train_{name}_loss" for name in sorted(active))]:
        values = logged_values(rows, key)
        assert values, f"{key} never logged; columns: {sorted(rows[0]) if rows else []}"
        assert all(math.isfinite(v) for v in values), (key, values)
    for name in active:
        assert max(logged_values(rows, f"train_{name}_weight")) > 0, name
    for name in set(REGULARIZERS) - active:
        assert not logged_values(rows, f"train_{name}_loss"), f"{name} ran but the recipe does not ask for it"
