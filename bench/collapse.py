"""Dimensional collapse on the offline demo: MAE vs U-MAE (uniformity) vs M-MAE (TCR).

Trains the three digits recipes with the same seed and epochs, in one process, and prints each
run's final ``val_effective_rank`` (exp of the entropy of the normalised singular values of the
val features), ``val_knn_acc1`` and ``val_acc1``; the three spectra go into one PNG.

    python bench/collapse.py --epochs 20 --out collapse.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from solo_ext.eval.diagnostics import plot_spectra
from solo_ext.run.pretrain import run_pretrain

CONFIG_DIR = Path(__file__).resolve().parents[1] / "scripts" / "pretrain" / "digits"
RECIPES = {"MAE": "mae.yaml", "U-MAE (uniformity)": "u-mae.yaml", "M-MAE (TCR)": "tcr-mae.yaml"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("collapse.png"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    results, spectra = {}, {}
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONFIG_DIR), version_base="1.2"):
        for label, recipe in RECIPES.items():
            cfg = compose(
                recipe,
                overrides=[
                    f"max_epochs={args.epochs}",
                    f"++seed={args.seed}",
                    f"checkpoint.dir={tmp}",
                    "checkpoint.enabled=False",
                    "auto_resume.enabled=False",
                    "wandb.enabled=False",
                    "++diagnostics.validate_before_training=False",
                    "++reconstructions.enabled=False",
                    "++enable_progress_bar=False",
                    *args.overrides,
                ],
            )
            trainer = run_pretrain(cfg)
            metrics = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("val_")}
            results[label] = metrics
            spectra[label] = trainer.lightning_module.last_singular_values
    print(f"\n{args.epochs} epochs, seed {args.seed}, digits val set")
    print(f"{'run':<22}{'val_effective_rank':>20}{'val_knn_acc1':>14}{'val_acc1':>10}")
    for label, m in results.items():
        print(f"{label:<22}{m['val_effective_rank']:>20.2f}{m['val_knn_acc1']:>14.2f}{m['val_acc1']:>10.2f}")
    base = results["MAE"]["val_effective_rank"]
    for label in list(RECIPES)[1:]:
        print(f"{label}: effective rank x{results[label]['val_effective_rank'] / base:.3f} of MAE's")
    path = plot_spectra(spectra, args.out, title=f"digits val features after {args.epochs} epochs")
    print(f"spectra: {path}")
    return results


if __name__ == "__main__":
    main()
