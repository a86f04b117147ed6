"""A tiny pretraining config on the digits (ViT 32 px, patch 8, depth 2) for method tests."""

import copy


def tiny_cfg(tmp_path, method="mae-reg", method_kwargs=None, **top):
    cfg = {
        "name": "tiny",
        "method": method,
        "backbone": {
            "name": "vit_tiny",
            "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
        },
        "method_kwargs": {
            "decoder_embed_dim": 16,
            "decoder_depth": 1,
            "decoder_num_heads": 2,
            "mask_ratio": 0.75,
            **(method_kwargs or {}),
        },
        "data": {"dataset": "digits", "num_workers": 0},
        "augmentations": [
            {
                "rrc": {"enabled": True, "crop_min_scale": 0.5},
                "horizontal_flip": {"prob": 0.0},
                "crop_size": 32,
            }
        ],
        "optimizer": {"name": "adamw", "batch_size": 16, "lr": 1e-3, "classifier_lr": 1e-2},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 0},
        "checkpoint": {"enabled": True, "dir": str(tmp_path / "trained_models")},
        "knn_eval": {"enabled": True},
        "wandb": {"enabled": False},
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 3,
        "limit_val_batches": 2,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
    }
    cfg.update(copy.deepcopy(top))
    return cfg


ALL_REGULARIZERS = {
    "uniformity": {"weight": 0.1, "gather": True},
    "tcr": {"weight": 0.1, "mu": 1.0, "gather": True},
    "magma": {"layers": [0], "weight": 0.5, "gather": True},
}
