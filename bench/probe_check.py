"""The offline probe against a converged closed-form-like fit on the same features: for every
probe of a study (``<out>/linear/*``), scikit-learn's LogisticRegression (lbfgs to convergence,
after a StandardScaler) fitted on the same checkpoint's clean features of the same kind, scored on
the same val images. Prints one line per probe and the largest gap; writes ``probe_check.csv``.

    python bench/probe_check.py study/digits-equal
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from solo_ext.config.paths import saved_run_args
from solo_ext.data import prepare_classification_datasets, prepare_dataloader, prepare_transforms
from solo_ext.run.knn_eval import backbone_for, extract_features
from solo_ext.utils.runfolder import read_json_object


def clean_features(checkpoint: str, kind: str):
    """(train, val) features of ``kind`` and labels, through the val transform."""
    backbone = backbone_for(checkpoint, saved_run_args(checkpoint))
    _, transform = prepare_transforms("digits", backbone.img_size)
    sets = prepare_classification_datasets("digits", transform, transform)
    out = []
    for ds in sets:
        loader = prepare_dataloader(ds, 256, 0, shuffle=False, drop_last=False)
        feats, targets = extract_features(backbone, loader, [kind], torch.device("cpu"))
        out.append((feats[kind].numpy(), targets.numpy()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for folder in sorted((args.out / "linear").iterdir()):
        run_args, _ = read_json_object(folder / "args.json")
        results, _ = read_json_object(folder / "results.json")
        if not run_args or not results or run_args.get("mode") != "probe":
            continue
        checkpoint, kind = run_args["pretrained_feature_extractor"], run_args["features"]
        (train_x, train_y), (val_x, val_y) = clean_features(checkpoint, kind)
        scaler = StandardScaler().fit(train_x)
        fit = LogisticRegression(max_iter=5000).fit(scaler.transform(train_x), train_y)
        sklearn_acc = 100 * float((fit.predict(scaler.transform(val_x)) == val_y).mean())
        probe_acc = results["metrics"]["val_acc1"]["final"]
        rows.append(
            {
                "probe": folder.name,
                "source": checkpoint,
                "features": kind,
                "probe_acc1": probe_acc,
                "sklearn_acc1": sklearn_acc,
                "gap": probe_acc - sklearn_acc,
            }
        )
        print(
            f"{folder.name} {kind:4s} probe {probe_acc:6.2f}  sklearn {sklearn_acc:6.2f}  "
            f"gap {probe_acc - sklearn_acc:+.2f}"
        )
    with open(args.out / "probe_check.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    gaps = [r["gap"] for r in rows]
    print(
        json.dumps(
            {
                "probes": len(rows),
                "largest_abs_gap": max(map(abs, gaps)),
                "mean_gap": sum(gaps) / len(gaps),
                "within_2_points": sum(abs(g) <= 2 for g in gaps),
            }
        )
    )


if __name__ == "__main__":
    main()
