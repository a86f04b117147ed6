"""A report across runs: mean ± 95% confidence interval over seeds, one row per configuration.

    python -m solo_ext.report DIR [DIR ...] [--baseline KEY=VALUE] [--out FOLDER]

DIR is a run folder or any folder above run folders (Hydra multirun, wandb sweeps and runs by
hand all leave ``<checkpoint.dir>/<method>/<run id>/`` with ``args.json`` and ``results.json``).
Pretraining runs that differ only by ``seed`` form a group; the config keys that vary between
groups become the table's first columns. Offline results join their pretraining run: a linear
run (``main_linear.py``) through its ``pretrained_feature_extractor``, ``main_knn.py`` through
the ``offline_knn`` section it adds to the run's results.json. A group holds one run per seed: a
seed found twice in a group stops the report with the runs named.

Every offline linear evaluation of a run is kept, one column per protocol (``L1``, ``L2``, ...,
spelled out under the table): a probe of the frozen features and MAE's augmented LARS probe of
the same checkpoint are different measurements. The offline probe's random-backbone baseline
(``mode: probe``) gets a column beside it. The offline kNN column is the row of the run's own
protocol (its features, k, T and distance, as ``main_knn.py`` runs by default), not the best row
of a k/T grid, which would be chosen on val; ``--knn-row best`` asks for that one instead. Where
``main_knn.py`` measured more than one feature kind (``--feature_type cls mean``), the kNN column
becomes one per kind, each with the run's own k, T and distance; a probe's effective rank of the
val features it scored gets a column beside its accuracy.

Per metric the table shows the mean over the group's seeds ± the half-width of the 95%
Student-t confidence interval (n = 1: the value alone); where some runs of a group have no finite
value of a metric, ``(n=K)`` follows, K being the runs that do. The values are each run's FINAL values
(the end of training), never the best epoch, which would favour noisy runs. With
``--baseline KEY=VALUE`` (e.g. ``name=mae-digits``) a second table gives each group's paired
difference to the baseline group over the seeds both have.

Writes ``report.md``, ``report.csv``, ``curves.png`` (per-epoch mean of each group, band: min to
max over seeds) and ``spectra.png`` (each group's final singular-value spectrum, normalised,
mean over seeds) to ``--out`` (default: the first DIR), each atomically; with offline probes that
recorded their curve, also ``probe_curves.png`` (the chosen setting's held-out acc1 by probe epoch).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from solo_ext.eval.diagnostics import atomic_output
from solo_ext.utils.errors import UserError, first_problem
from solo_ext.utils.runfolder import ARGS_FILE, RESULTS_FILE

# Keys that say where or how a run was kept, not what it trained: never a grouping key.
NOT_CONFIG = (
    "seed",
    "run_id",
    "wandb_run_id",
    "derived",
    "checkpoint",
    "auto_resume",
    "wandb",
    "resume_from_checkpoint",
    "enable_progress_bar",
)
# (column title, where the value lives in a joined run, decimals shown); the offline linear
# columns, one per protocol found, go between the online and the offline kNN ones
ONLINE_METRICS = (
    ("online linear acc1", ("metrics", "val_acc1"), 2),
    ("online kNN acc1", ("metrics", "val_knn_acc1"), 2),
)
LATER_METRICS = (
    ("offline kNN acc1", ("offline_knn", "acc1"), 2),
    ("effective rank", ("metrics", "val_effective_rank"), 2),
    ("reconstruction loss", ("metrics", "train_reconstruction_loss"), 4),
)
# which row of main_knn.py's table a run is reported by: its own protocol, or the best of the grid
KNN_ROWS = ("own", "best")
# what a run without these keys in args.json was evaluated with (solo-learn's defaults)
KNN_DEFAULTS = {"k": 20, "T": 0.07, "distance_func": "euclidean"}
CURVES = (
    ("val_knn_acc1", "online kNN acc1"),
    ("val_acc1", "online linear acc1"),
    ("val_effective_rank", "effective rank"),
    ("train_reconstruction_loss", "reconstruction loss"),
)


# --baseline: KEY=VALUE, split at the first "="
KEY_VALUE = re.compile(r"([^=]*)=(.*)", re.DOTALL)


class ReportError(UserError, ValueError):
    """Nothing to report, or a bad argument; printed as one line."""


# ----------------------------------------------------------------------------- reading runs
def find_runs(dirs: Iterable[Path]) -> list[Path]:
    """Every folder at or below ``dirs`` holding both args.json and results.json (none below a
    folder that does not exist)."""
    found = []
    for root in filter(Path.is_dir, dirs):
        candidates = [root] if (root / ARGS_FILE).is_file() else []
        candidates += [p.parent for p in sorted(root.rglob(ARGS_FILE)) if p.parent != root]
        found += [p for p in candidates if (p / RESULTS_FILE).is_file()]
    return sorted(set(found))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists as JSON text so that they compare and print."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


def _load(run: Path) -> tuple[dict, dict] | None:
    """The run's args.json and results.json; None (a warning names the bad file) when one of
    them cannot be read, which leaves the run out of the report."""
    from solo_ext.results import read_run_json  # (with Lightning, which the report needs not otherwise)

    args = read_run_json(run / ARGS_FILE, "run left out of the report")
    if args is None:
        return None
    results = read_run_json(run / RESULTS_FILE, "run left out of the report")
    return None if results is None else (args, results)


def own_features(args: Mapping) -> str:
    """The feature kind a run evaluates with (its online probe's and kNN's)."""
    return (args.get("method_kwargs") or {}).get("online_features") or "cls"


def own_knn_row(args: Mapping, rows: Sequence[Mapping], features: str | None = None) -> Mapping | None:
    """The row of main_knn.py's table measured with the run's own protocol (features, distance,
    k and, for the cosine vote, T), or with ``features`` instead of the run's own feature kind
    and the rest of its protocol; None when the table has no such row."""
    knn = {**KNN_DEFAULTS, **(args.get("knn_eval") or {})}
    features = features or own_features(args)
    for row in rows:
        same_t = knn["distance_func"] != "cosine" or math.isclose(
            float(row.get("T", math.nan)), float(knn["T"])
        )
        if (row.get("feature_type"), row.get("distance"), row.get("k")) == (
            features,
            knn["distance_func"],
            knn["k"],
        ) and same_t:
            return row
    return None


def load_runs(dirs: Sequence[Path], knn_row: str = "own") -> list[dict]:
    """Pretraining runs with their offline results joined: a dict per run with ``args``,
    ``config`` (flattened grouping keys), ``seed``, ``metrics``, ``history``, ``spectrum``,
    ``linear`` ({protocol: final metrics} of each offline linear evaluation of it),
    ``random_backbone`` ({protocol: the probe's random-backbone val_acc1}) and ``offline_knn``
    (the row of ``knn_row``: the run's own protocol, or the best); empty when there is none."""
    runs: dict[Path, dict[str, Any]] = {}
    linear: list[tuple[dict, dict]] = []
    for folder in find_runs(dirs):
        loaded = _load(folder)
        if loaded is None:
            continue
        args, results = loaded
        if args.get("method") == "linear":
            linear.append((args, results))
            continue
        config = {k: v for k, v in flatten(args).items() if k.split(".")[0] not in NOT_CONFIG}
        table = results.get("offline_knn") or {}
        rows = table.get("rows") or []
        offline_knn = (table.get("best") if knn_row == "best" else own_knn_row(args, rows)) or {}
        # the run's own k, T and distance on each feature kind the table has (a run measured on
        # cls and mean features is compared on both)
        by_features = {}
        if knn_row == "own":
            for kind in sorted({str(row.get("feature_type")) for row in rows}):
                row = own_knn_row(args, rows, kind)
                if row is not None and "acc1" in row:
                    by_features[kind] = row["acc1"]
        runs[folder.resolve()] = {
            "dir": folder,
            "args": args,
            "config": config,
            "seed": args.get("seed"),
            "metrics": {k: v["final"] for k, v in (results.get("metrics") or {}).items()},
            "history": results.get("history") or {},
            "spectrum": results.get("spectrum"),
            "linear": {},
            "random_backbone": {},
            "probe_curve": {},
            "offline_knn": {
                **({"acc1": offline_knn["acc1"]} if "acc1" in offline_knn else {}),
                **{f"acc1_{kind}": acc for kind, acc in by_features.items()},
            },
        }
    for args, results in linear:
        source = args.get("pretrained_feature_extractor")
        run = runs.get(Path(source).resolve().parent) if source else None
        if run is None:
            continue
        protocol = linear_protocol(args, results)
        if protocol in run["linear"]:
            print(
                f"WARNING: {run['dir']} has two offline evaluations with the protocol '{protocol}'; "
                f"the report keeps {results.get('run_dir') or source}'s (the later folder)",
                file=sys.stderr,
            )
        run["linear"][protocol] = {k: v["final"] for k, v in (results.get("metrics") or {}).items()}
        baseline = results.get("random_backbone") or {}
        if "val_acc1" in baseline:
            run["random_backbone"][protocol] = baseline["val_acc1"]
        curve = (results.get("probe") or {}).get("curve")
        if curve:
            run["probe_curve"][protocol] = [(p["epoch"], p["holdout_acc1"]) for p in curve]
    return list(runs.values())


def linear_protocol(args: Mapping, results: Mapping) -> str:
    """An offline linear evaluation's protocol in words (results.json's, else args.json's)."""
    protocols = results.get("protocols") or (args.get("derived") or {}).get("protocols") or {}
    return protocols.get("linear") or "offline linear evaluation (protocol not recorded)"


def metric_columns(runs: Sequence[Mapping]) -> tuple[list[tuple], list[str]]:
    """The table's metrics (title, where, decimals) and the legend of the offline linear
    protocols (``L<i>: <protocol>``)."""
    protocols = linear_protocols(runs)
    columns: list[tuple[str, tuple[str, ...], int]] = list(ONLINE_METRICS)
    legend: list[str] = []
    for i, protocol in enumerate(protocols, 1):
        columns.append((f"offline linear acc1 (L{i})", ("linear", protocol, "val_acc1"), 2))
        if any(protocol in run["random_backbone"] for run in runs):
            columns.append((f"random-backbone acc1 (L{i})", ("random_backbone", protocol), 2))
        if any("val_effective_rank" in run["linear"].get(protocol, {}) for run in runs):
            columns.append(
                (f"probed features' effective rank (L{i})", ("linear", protocol, "val_effective_rank"), 2)
            )
        legend.append(f"L{i}: {protocol}")
    later = list(LATER_METRICS)
    kinds = sorted({k[len("acc1_") :] for run in runs for k in run["offline_knn"] if k.startswith("acc1_")})
    if len(kinds) > 1:  # one offline kNN column per feature kind instead of the run's own kind alone
        at = next(i for i, c in enumerate(later) if c[1] == ("offline_knn", "acc1"))
        later[at : at + 1] = [
            (f"offline kNN acc1 ({kind})", ("offline_knn", f"acc1_{kind}"), 2) for kind in kinds
        ]
    return columns + later, legend


def linear_protocols(runs: Sequence[Mapping]) -> list[str]:
    """The offline linear protocols found, in the order their L<i> columns are numbered."""
    return sorted({p for run in runs for p in run["linear"]})


# ----------------------------------------------------------------------------- statistics
def t_half_width(values: Sequence[float], confidence: float = 0.95) -> float | None:
    """Half-width of the Student-t confidence interval of the mean; None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)


def mean_ci(values: Sequence[float | None]) -> tuple[float, float | None, int]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, None, 0
    return sum(finite) / len(finite), t_half_width(finite), len(finite)


def format_mean_ci(
    mean: float, half: float | None, n: int, decimals: int = 2, total: int | None = None
) -> str:
    """``mean ± half``; ``(n=K)`` after it when only K of the ``total`` runs have a value."""
    if n == 0:
        return "-"
    text = f"{mean:.{decimals}f}" if half is None else f"{mean:.{decimals}f} ± {half:.{decimals}f}"
    return text if total is None or n == total else f"{text} (n={n})"


def metric_value(run: Mapping, where: Sequence[str]) -> float | None:
    node: Any = run
    for key in where:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def duplicate_seeds(groups: Sequence[Mapping], varying: Sequence[str]) -> str | None:
    """One line naming the runs of the first seed that a group holds twice; None when none does."""
    for group in groups:
        by_seed: dict = {}
        for run in group["runs"]:
            by_seed.setdefault(run["seed"], []).append(str(run["dir"]))
        for seed, folders in by_seed.items():
            if len(folders) > 1:
                return (
                    f"seed {seed} appears {len(folders)} times in the group {_group_label(group, varying)}: "
                    f"{', '.join(folders)}; a group holds one run per seed (move or delete the extra runs, "
                    "or report their folders apart)"
                )
    return None


# ----------------------------------------------------------------------------- grouping
def group_runs(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """Groups of runs with the same config (all but the seed), in order of appearance, and the
    keys whose values differ between groups."""
    groups: dict[tuple, dict] = {}
    for run in runs:
        key = tuple(sorted((k, json.dumps(v)) for k, v in run["config"].items()))
        groups.setdefault(key, {"config": run["config"], "runs": []})["runs"].append(run)
    all_keys = sorted({k for g in groups.values() for k in g["config"]})
    varying = [k for k in all_keys if len({json.dumps(g["config"].get(k)) for g in groups.values()}) > 1]
    # the name first, then the rest in key order; a key is shown only when the keys before it
    # do not already tell the groups apart on it (method follows from name, a recipe's fixed
    # regularizer settings from its name, ...)
    varying.sort(key=lambda k: (k != "name", k))
    shown: list[str] = []
    for key in varying:
        seen: dict[str, str] = {}
        for group in groups.values():
            known = json.dumps([group["config"].get(k) for k in shown])
            value = json.dumps(group["config"].get(key))
            if seen.setdefault(known, value) != value:
                shown.append(key)
                break
    varying = shown
    ordered = sorted(groups.values(), key=lambda g: [str(g["config"].get(k)) for k in varying])
    for group in ordered:
        group["runs"].sort(key=lambda r: (r["seed"] is None, r["seed"]))
    return ordered, varying


def short_key(key: str) -> str:
    return key.removeprefix("method_kwargs.").removeprefix("regularizers.")


def parse_baseline(text: str | None) -> tuple[str, str] | None:
    """``(KEY, VALUE)`` of ``--baseline KEY=VALUE``; None when ``text`` is None or not of that form."""
    match = None if text is None else KEY_VALUE.fullmatch(text)
    return None if match is None else (match[1], match[2])


def matches(config: Mapping, key: str, value: str) -> bool:
    have = config.get(key)
    return have is not None and (str(have) == value or json.dumps(have) == value)


# ----------------------------------------------------------------------------- tables
def build_tables(groups: list[dict], varying: list[str], baseline: dict | None, metrics: Sequence[tuple]):
    """(main rows, header) and (paired rows, header) as lists of cell lists; the paired table
    (None without ``baseline``, one of ``groups``) compares every other group to ``baseline``.
    ``metrics``: the columns of :func:`metric_columns`."""
    header = [short_key(k) for k in varying] + ["n", "seeds"] + [title for title, _, _ in metrics]
    rows, raw = [], []
    for group in groups:
        cells = [_cell(group["config"].get(k)) for k in varying]
        seeds = [r["seed"] for r in group["runs"]]
        cells += [str(len(group["runs"])), ",".join(map(str, seeds))]
        stats = []
        for _, where, decimals in metrics:
            mean, half, n = mean_ci([metric_value(r, where) for r in group["runs"]])
            cells.append(format_mean_ci(mean, half, n, decimals, total=len(group["runs"])))
            stats.append((mean, half, n))
        rows.append(cells)
        raw.append(stats)
    paired = None
    if baseline is not None:
        base_runs = {r["seed"]: r for r in baseline["runs"]}
        paired_header = [short_key(k) for k in varying] + ["pairs"] + [f"Δ {t}" for t, _, _ in metrics]
        paired_rows = []
        for group in groups:
            if group is baseline:
                continue
            pairs = [(r, base_runs[r["seed"]]) for r in group["runs"] if r["seed"] in base_runs]
            cells = [_cell(group["config"].get(k)) for k in varying] + [str(len(pairs))]
            for _, where, decimals in metrics:
                values = [(metric_value(a, where), metric_value(b, where)) for a, b in pairs]
                diffs = [x - y for x, y in values if x is not None and y is not None]
                cells.append(format_mean_ci(*mean_ci(diffs), decimals, total=len(pairs)))
            paired_rows.append(cells)
        paired = (paired_header, paired_rows)
    return (header, rows, raw), paired


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pictures
def _group_label(group: Mapping, varying: Sequence[str]) -> str:
    """The group's values of the varying keys, the name bare, keys it does not have left out."""
    parts = []
    for key in varying:
        value = group["config"].get(key)
        if value is not None:
            parts.append(str(value) if key == "name" else f"{short_key(key)}={value}")
    return ", ".join(parts) or "all runs"


def _colours(count: int) -> list:
    """Distinct colours for up to 20 groups (matplotlib's default cycle repeats after 10)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if count > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(count)]


def plot_curves(groups: list[dict], varying: list[str], path: Path) -> None:
    """Per-epoch mean of each group, with a band from the minimum to the maximum over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4.2))
    colours = _colours(len(groups))
    for ax, (metric, title) in zip(axes, CURVES):
        for group, colour in zip(groups, colours):
            by_epoch: dict[float, list[float]] = {}
            for run in group["runs"]:
                for x, v in run["history"].get(metric, []):
                    by_epoch.setdefault(x, []).append(v)
            if not by_epoch:
                continue
            xs = sorted(by_epoch)
            mean = [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs]
            ax.plot(xs, mean, label=_group_label(group, varying), color=colour)
            lows, highs = [min(by_epoch[x]) for x in xs], [max(by_epoch[x]) for x in xs]
            ax.fill_between(xs, lows, highs, alpha=0.15, color=colour)
        ax.set_title(title)
        ax.set_xlabel("epochs completed")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(labels) / 3), 1, 1))
    _save_figure(fig, path)
    plt.close(fig)


def plot_spectra(groups: list[dict], varying: list[str], path: Path) -> None:
    """Each group's final singular values normalised to sum 1, mean over seeds, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for group, colour in zip(groups, _colours(len(groups))):
        spectra = [r["spectrum"] for r in group["runs"] if r["spectrum"]]
        if not spectra:
            continue
        size = min(len(s) for s in spectra)
        normalised = [[v / sum(s[:size]) for v in s[:size]] for s in spectra]
        mean = [sum(col) / len(col) for col in zip(*normalised)]
        ax.semilogy(
            range(1, size + 1),
            [max(v, 1e-12) for v in mean],
            label=_group_label(group, varying),
            color=colour,
        )
    ax.set_xlabel("singular value index")
    ax.set_ylabel("normalised singular value (mean over seeds)")
    ax.set_title("final feature spectra (val features)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_probe_curves(groups: list[dict], varying: list[str], protocols: list[str], path: Path) -> None:
    """The offline probe's curve: the chosen setting's held-out acc1 by probe epoch, mean over each
    group's seeds, one panel per protocol (L<i>) that has curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (i, p)
        for i, p in enumerate(protocols, 1)
        if any(p in r["probe_curve"] for g in groups for r in g["runs"])
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (i, protocol) in zip(axes[0], panels):
        for group, colour in zip(groups, _colours(len(groups))):
            by_epoch: dict[int, list[float]] = {}
            for run in group["runs"]:
                for epoch, acc in run["probe_curve"].get(protocol, []):
                    by_epoch.setdefault(epoch, []).append(acc)
            if by_epoch:
                xs = sorted(by_epoch)
                ax.semilogx(
                    xs,
                    [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs],
                    marker="o",
                    ms=3,
                    label=_group_label(group, varying),
                    color=colour,
                )
        ax.set_title(f"L{i}", fontsize=9)
        ax.set_xlabel("probe epochs")
        ax.set_ylabel("held-out acc1 of the chosen setting")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(labels) / 3), 1, 1))
    _save_figure(fig, path)
    plt.close(fig)


def _save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _write_atomic(path, buffer.getvalue())


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


# ----------------------------------------------------------------------------- entry
def make_report(
    dirs: Sequence[Path], out: Path | None = None, baseline: str | None = None, knn_row: str = "own"
) -> str:
    """Build the report; write its four files to ``out`` (default ``dirs[0]``); return the
    markdown. ``knn_row``: which offline kNN row stands for a run (``own`` protocol or ``best``).

    Raises:
        ReportError: ``baseline`` is not KEY=VALUE, ``knn_row`` is unknown, a folder of ``dirs``
            does not exist, there is no pretraining run, a group holds a seed twice, or
            ``baseline`` does not name exactly one group.
    """
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out is not None else dirs[0]
    base = parse_baseline(baseline)
    missing = [str(d) for d in dirs if not d.is_dir()]
    # the runs are read only when the arguments pass (their rows come first below)
    bad_arguments = missing or (baseline is not None and base is None) or knn_row not in KNN_ROWS
    runs = [] if bad_arguments else load_runs(dirs, knn_row)
    groups, varying = group_runs(runs)
    base_groups = [g for g in groups if base is not None and matches(g["config"], *base)]
    duplicate = duplicate_seeds(groups, varying)  # None without runs (no groups)
    problems = (
        (
            baseline is not None and base is None,
            f"--baseline={baseline!r}: must be KEY=VALUE, e.g. name=mae-digits",
        ),
        (knn_row not in KNN_ROWS, f"--knn-row={knn_row!r}: must be one of {', '.join(KNN_ROWS)}"),
        (missing, f"{', '.join(missing)}: no such folder"),
        (not runs, f"{', '.join(map(str, dirs))}: no pretraining run with args.json and results.json"),
        (duplicate, duplicate or ""),
        (
            base is not None and len(base_groups) != 1,
            f"--baseline={baseline}: matches {len(base_groups)} groups; it must name exactly one "
            f"(varying keys: {', '.join(varying) or 'none'})",
        ),
    )
    problem = first_problem(problems)
    if problem is not None:
        raise ReportError(problem)
    metrics, legend = metric_columns(runs)
    (header, rows, raw), paired = build_tables(groups, varying, base_groups[0] if base else None, metrics)
    knn = "the run's own protocol" if knn_row == "own" else "the best row of its k/T table (chosen on val)"
    if any(title.startswith("offline kNN acc1 (") for title, _, _ in metrics):
        knn += "; one column per feature kind measured, each with the run's own k, T and distance"
    text = [
        f"{len(runs)} runs in {len(groups)} groups; mean ± 95% CI half-width (Student t) over seeds of "
        "each run's final values; (n=K): only K runs of the group have a finite value",
        "",
        markdown(header, rows),
        "",
        f"Offline kNN: {knn}.",
        *[f"- {line}" for line in legend],
    ]
    if paired is not None:
        assert base is not None  # a paired table is built only for a baseline group
        text += ["", f"Paired difference to {base[0]}={base[1]} over shared seeds:", "", markdown(*paired)]
    report = "\n".join(text) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "report.md", report.encode())
    _write_atomic(out / "report.csv", _csv(groups, varying, raw, metrics).encode())
    plot_curves(groups, varying, out / "curves.png")
    plot_spectra(groups, varying, out / "spectra.png")
    if any(run["probe_curve"] for run in runs):
        plot_probe_curves(groups, varying, linear_protocols(runs), out / "probe_curves.png")
    return report


def _csv(groups: list[dict], varying: list[str], raw: list, metrics: Sequence[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = []
    for title, _, _ in metrics:
        columns += [f"{title} mean", f"{title} ci95", f"{title} n"]
    writer.writerow([*varying, "n", "seeds", *columns])
    for group, stats in zip(groups, raw):
        cells: list[str | int] = [_cell(group["config"].get(k)) for k in varying]
        cells += [len(group["runs"]), " ".join(str(r["seed"]) for r in group["runs"])]
        for mean, half, n in stats:
            cells += ["" if n == 0 else f"{mean:.6g}", "" if half is None else f"{half:.6g}", n]
        writer.writerow(cells)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m solo_ext.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run folders or folders above them")
    parser.add_argument("--baseline", help="KEY=VALUE naming the baseline group, e.g. name=mae-digits")
    parser.add_argument(
        "--out", type=Path, help="where report.md/csv and the PNGs go (default: the first DIR)"
    )
    parser.add_argument(
        "--knn-row",
        default="own",
        help="the offline kNN row reported: own (the run's protocol, default) or best (of the k/T grid, "
        "chosen on val)",
    )
    args = parser.parse_args(argv)
    from solo_ext.run.exits import exit_on_user_error

    with exit_on_user_error():
        report = make_report(args.dirs, args.out, args.baseline, args.knn_row)
    print(report)
    print(f"written to {args.out or args.dirs[0]}: report.md, report.csv, curves.png, spectra.png")


if __name__ == "__main__":
    main()
