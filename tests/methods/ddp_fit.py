"""Fit a tiny MAE with all three regularizers for a few steps and save the weights; run as a script
with ``--devices 1`` or ``--devices 2`` (Lightning's DDP re-runs this script for rank 1).

Data order is made to match on purpose: both runs draw batches through a DistributedSampler with
the same seed (1 replica, or 2), so the union of the two ranks' batches at step t is the
one-process batch at step t; masks are keyed by sample index; augmentations are off.
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from solo_ext.config.pretrain import parse_cfg  # noqa: E402
from solo_ext.data import build_transform_pipeline, prepare_pretrain_dataset  # noqa: E402
from solo_ext.data.augmentations import FullTransformPipeline, NCropAugmentation  # noqa: E402
from solo_ext.methods import METHODS  # noqa: E402
from solo_ext.run.pretrain import build_trainer  # noqa: E402
from tests.methods.tiny import ALL_REGULARIZERS, tiny_cfg  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local-magma", action="store_true", help="MAGMA per process (not gathered)")
    args = parser.parse_args()
    per_device = args.global_batch // args.devices
    regularizers = {
        **ALL_REGULARIZERS,
        "magma": {**ALL_REGULARIZERS["magma"], "gather": not args.local_magma},
    }
    cfg = tiny_cfg(
        args.out,
        method_kwargs={"regularizers": regularizers, "index_masks": True},
        optimizer={"name": "adamw", "batch_size": per_device, "lr": 1e-3, "classifier_lr": 1e-2},
        augmentations=[{"rrc": {"enabled": False}, "horizontal_flip": {"prob": 0.0}, "crop_size": 32}],
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        limit_train_batches=args.steps,
        limit_val_batches=0,
        use_distributed_sampler=False,
        knn_eval={"enabled": False},
        checkpoint={"enabled": False, "dir": str(args.out / "trained_models")},
    )
    cfg = parse_cfg(OmegaConf.create(cfg))
    torch.manual_seed(0)
    model = METHODS[cfg.method](cfg)  # same initial weights in every process and run
    aug = cfg.augmentations[0]
    ds = prepare_pretrain_dataset(
        "digits", FullTransformPipeline([NCropAugmentation(build_transform_pipeline("digits", aug), 1)])
    )
    rank = int(os.environ.get("LOCAL_RANK", 0))
    sampler = DistributedSampler(
        ds, num_replicas=args.devices, rank=rank, shuffle=True, seed=0, drop_last=True
    )
    loader = DataLoader(ds, batch_size=per_device, sampler=sampler, drop_last=True)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out / "initial.pt")
    trainer = build_trainer(cfg, args.out / "run", "ddptest", [])
    trainer.fit(model, loader)
    if trainer.is_global_zero:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, args.out / "weights.pt")


if __name__ == "__main__":
    main()
