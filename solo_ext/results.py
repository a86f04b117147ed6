"""What a run reached: its metrics' histories, final and best values, protocols and files.

Every entry point ends by printing :func:`format_summary` and writing the same as
``results.json`` in its run folder (atomically), which ``python -m solo_ext.report`` reads.
The values come from the run's CSV log (``csv/version_*/metrics.csv``, every version, so a
resumed run's history is whole).

Epoch axis: ``x`` is the number of training epochs completed when a value was measured, so the
validation before training (``diagnostics.validate_before_training``) sits at 0 and the one at
the end of epoch ``e`` (0-based) at ``e + 1``.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from solo_ext.utils.runfolder import RESULTS_FILE, read_json_object, write_json_atomic
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in

_VERSION = re.compile(r"version_(\d+)$")


def _is_reported(column: str) -> bool:
    """Validation metrics and the epoch means of the training losses."""
    if column.startswith("val_"):
        return True
    return column.startswith("train_") and column.endswith("loss_epoch")


def read_history(run_dir: Path) -> dict[str, list[list[float]]]:
    """{metric: [[epochs completed, value], ...]} from every CSV version of a run, in order."""
    versions = sorted(
        (int(m.group(1)), p) for p in (run_dir / "csv").glob("version_*") if (m := _VERSION.search(p.name))
    )
    history: dict[str, dict[float, float]] = {}
    for _, version in versions:
        path = version / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                epoch = int(float(row.get("epoch") or 0))
                for column, value in row.items():
                    if not value or not _is_reported(column):
                        continue
                    name = column.removesuffix("_epoch")
                    x = epoch + 1 if step > 0 or not name.startswith("val_") else 0
                    history.setdefault(name, {})[x] = float(value)
    return {name: [[x, v] for x, v in sorted(points.items())] for name, points in history.items()}


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def summarize(history: Mapping[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    """Final and best value (and the epoch of the best) of every metric with finite values."""
    out = {}
    for name, points in history.items():
        finite = [(x, v) for x, v in points if math.isfinite(v)]
        if not finite:
            continue
        pick = min if lower_is_better(name) else max
        best_x, best = pick(finite, key=lambda p: p[1])
        out[name] = {"final": finite[-1][1], "best": best, "best_epoch": best_x, "epochs": finite[-1][0]}
    return out


def protocol_of(metric: str, protocols: Mapping[str, str]) -> str:
    """The protocol behind a metric, in words, from ``derived.protocols`` of args.json."""
    if metric.startswith("val_knn"):
        return protocols.get("online_knn") or protocols.get("knn", "weighted kNN")
    if metric in ("val_acc1", "val_acc5", "val_loss"):
        return protocols.get("online_linear") or protocols.get("linear", "linear head")
    if metric == "val_effective_rank":
        return "exp(entropy) of the normalised singular values of val features (the probe's)"
    if metric.startswith("train_"):
        return "training loss, mean over the epoch"
    return ""


def newest(folder: Path, pattern: str) -> str | None:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def collect_results(run_dir: Path, args: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict:
    """The results of a finished run: metrics, protocols, checkpoint and pictures."""
    history = read_history(run_dir)
    protocols = dict((args.get("derived") or {}).get("protocols") or {})
    metrics: dict[str, dict[str, Any]] = summarize(history)  # each gets its protocol's name too
    for name, values in metrics.items():
        values["protocol"] = protocol_of(name, protocols)
    ckpts = checkpoints_in(run_dir)
    return {
        "name": args.get("name"),
        "method": args.get("method"),
        "seed": args.get("seed"),
        "run_dir": str(run_dir),
        "metrics": metrics,
        "protocols": protocols,
        "history": history,
        "checkpoint": str(ckpts[-1]) if ckpts else None,
        "pictures": {
            "reconstructions": newest(run_dir / "reconstructions", "ep=*.png"),
            "spectrum": newest(run_dir / "spectrum", "ep=*.png"),
        },
        **(extra or {}),
    }


def read_run_json(path: Path, consequence: str) -> dict | None:
    """The JSON object in ``path`` (a run's args.json or results.json); None, after one WARNING
    line on stderr naming the file, what is wrong and ``consequence``, when it cannot be read or
    is not a JSON object (a file cut short by a crash or a full disk, edited by hand)."""
    data, problem = read_json_object(path)
    if problem is not None:
        print(f"WARNING: {path} {problem}; {consequence}", file=sys.stderr)
    return data


def merge_results(run_dir: Path, section: str, data: Any) -> Path | None:
    """Put ``data`` under ``section`` of the run folder's results.json (created if absent),
    atomically; the other sections are kept. An unreadable results.json is left as it is
    (a warning names it) and None returned."""
    path = run_dir / RESULTS_FILE
    current = read_run_json(path, f"left as it is, {section} not added") if path.is_file() else {}
    if current is None:
        return None
    write_json_atomic(path, {**current, section: data})
    return path


def write_results(run_dir: Path, results: Mapping[str, Any]) -> Path:
    """Write results.json atomically, keeping sections other tools added (``offline_knn``); an
    unreadable one is replaced (a warning names it)."""
    path = run_dir / RESULTS_FILE
    current = read_run_json(path, "replaced by this run's results") if path.is_file() else {}
    write_json_atomic(path, {**(current or {}), **results})
    return path


SUMMARY_ORDER = ("val_acc1", "val_acc5", "val_knn_acc1", "val_knn_acc5", "val_effective_rank", "val_loss")


def format_summary(results: Mapping[str, Any], path: Path) -> str:
    """The short block a run ends with."""
    metrics = results["metrics"]
    names = [n for n in SUMMARY_ORDER if n in metrics] + sorted(
        n for n in metrics if n not in SUMMARY_ORDER and n.endswith("loss")
    )
    lines = [f"== results of {results['name']} ({results['run_dir']}) =="]
    width = max((len(n) for n in names), default=0)
    for name in names:
        m = metrics[name]
        lines.append(
            f"{name:<{width}}  final {m['final']:9.4g}  best {m['best']:9.4g} (epoch {m['best_epoch']:g})"
            f"  [{m['protocol']}]"
        )
    lines.append(f"checkpoint: {results['checkpoint']}")
    for kind, picture in results["pictures"].items():
        if picture:
            lines.append(f"{kind}: {picture}")
    lines.append(f"results: {path}")
    return "\n".join(lines)
