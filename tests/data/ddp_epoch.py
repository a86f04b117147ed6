"""Pretrain a tiny MAE for 2 epochs on a JPEG folder with 2 gloo processes and record, per rank and
epoch, the sample indexes of every training batch; run as a script (Lightning's DDP re-runs it for
rank 1). ``--format image_folder`` (tensor back-end; Lightning's DistributedSampler) or ``dali``
(our sharding)."""

import argparse
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from omegaconf import OmegaConf
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from solo_ext.config.pretrain import parse_cfg  # noqa: E402
from solo_ext.methods import METHODS  # noqa: E402
from solo_ext.run.pretrain import build_pretrain_loaders, build_trainer  # noqa: E402
from tests.methods.tiny import tiny_cfg  # noqa: E402


class RecordIndexes(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        indexes, crops, _ = batch
        assert crops[0].dtype.is_floating_point  # normalised on the device
        self.seen.setdefault(str(trainer.current_epoch), []).append(indexes.tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def write_folder(root: Path, classes: int, per_class: int) -> None:
    for k in range(classes):
        for i in range(per_class):
            path = root / f"class{k}" / f"{i}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng(100 * k + i)
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, quality=90)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    write_folder(args.out / "train", classes=3, per_class=8)  # 24 images: 2 ranks x 3 steps x 4
    cfg = tiny_cfg(
        args.out,
        method="mae",
        data={
            "dataset": "custom",
            "train_path": str(args.out / "train"),
            "format": args.format,
            "num_workers": 0,
        },
        augmentations=[{"crop_size": 32}],
        optimizer={"name": "adamw", "batch_size": 4, "lr": 1e-3, "classifier_lr": 1e-2},
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_train_batches=1.0,
        limit_val_batches=0,
        knn_eval={"enabled": False},
        checkpoint={"enabled": False, "dir": str(args.out / "trained_models")},
    )
    cfg = parse_cfg(OmegaConf.create(cfg))
    train_loader, _ = build_pretrain_loaders(cfg)
    model = METHODS[cfg.method](cfg)
    trainer = build_trainer(cfg, args.out / "run", "ddp-epoch", [RecordIndexes(args.out)])
    trainer.fit(model, train_loader)


if __name__ == "__main__":
    main()
