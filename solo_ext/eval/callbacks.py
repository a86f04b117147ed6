"""Pictures while pretraining: MAE reconstructions of fixed val images and the feature spectrum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from solo_ext.eval.diagnostics import plot_spectrum
from solo_ext.eval.reconstruction import reconstruction_grid, save_grid_png, upscale_nearest

# small images (digits, CIFAR: 32 px) are repeated up to at least this many pixels per cell
RECONSTRUCTION_MIN_CELL = 128


class PicturesCallback(Callback):
    """Every ``reconstruction_frequency`` epochs: original | masked | reconstruction for the first
    ``num_images`` val images, with the same mask each time (a fixed seed, the training RNG
    untouched); every ``spectrum_frequency`` epochs: the singular-value spectrum of the val
    features. PNGs go to ``run_dir/{reconstructions,spectrum}/``, and to wandb when it is on."""

    def __init__(
        self,
        run_dir: Path,
        mean,
        std,
        reconstruction_frequency: int | None,
        num_images: int,
        spectrum_frequency: int | None,
    ):
        self.run_dir = Path(run_dir)
        self.mean, self.std = mean, std
        self.reconstruction_frequency = reconstruction_frequency
        self.num_images = num_images
        self.spectrum_frequency = spectrum_frequency

    def _due(self, frequency: int | None, epoch: int) -> bool:
        if not frequency:
            return False
        return (epoch + 1) % frequency == 0

    def _log_image(self, trainer: pl.Trainer, key: str, path: Path, caption: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], caption=[caption], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        if self._due(self.reconstruction_frequency, epoch) and trainer.val_dataloaders:
            self.save_reconstructions(trainer, pl_module, epoch)
        method: Any = pl_module  # a pretraining method: its spectrum and config
        if self._due(self.spectrum_frequency, epoch) and method.last_singular_values is not None:
            path = plot_spectrum(
                method.last_singular_values,
                self.run_dir / "spectrum" / f"ep={epoch}.png",
                title=f"{method.cfg.name}: val feature spectrum, epoch {epoch}",
            )
            self._log_image(trainer, "val_spectrum", path, f"epoch {epoch}")

    def save_reconstructions(self, trainer: pl.Trainer, pl_module: Any, epoch: int) -> None:
        """``pl_module``: an MAE method (normalize_val_images, reconstruct, patch_size, norm_pix_loss)."""
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        assert loader is not None  # called only when the trainer has val loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            count = min(self.num_images, len(dataset))
            imgs = torch.stack([dataset[i][0] for i in range(count)])
        else:  # a DALI loader: the first val batch (val order is fixed)
            imgs = next(iter(loader))[0][: self.num_images]
        # uint8 images of the tensor and DALI back-ends are normalised as the module's batches are
        imgs = pl_module.normalize_val_images(imgs.to(pl_module.device))
        with torch.random.fork_rng(devices=[pl_module.device] if pl_module.device.type == "cuda" else []):
            torch.manual_seed(0)
            pred, mask = pl_module.reconstruct(imgs)
        grid = reconstruction_grid(
            imgs.float().cpu(),
            pred.float().cpu(),
            mask.cpu(),
            pl_module.patch_size,
            self.mean,
            self.std,
            pl_module.norm_pix_loss,
        )
        caption = f"epoch {epoch}: original | masked | reconstruction" + (
            " (norm_pix: de-normalised with each target patch's mean/std)" if pl_module.norm_pix_loss else ""
        )
        path = save_grid_png(
            upscale_nearest(grid, RECONSTRUCTION_MIN_CELL, imgs.shape[-1]),
            self.run_dir / "reconstructions" / f"ep={epoch}.png",
            caption=caption,
            column_labels=("original", "masked", "reconstruction"),
        )
        self._log_image(trainer, "val_reconstructions", path, caption)
