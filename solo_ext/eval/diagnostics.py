"""Dimensional-collapse diagnostics: singular-value spectrum and effective rank of features.

MAE features tend to occupy a low-dimensional subspace ("dimensional collapse"), which U-MAE
(Zhang et al., "How Mask Matters: Towards Theoretical Understandings of Masked Autoencoders",
NeurIPS 2022) counters with a uniformity loss and M-MAE (Tan et al., "Information Flow in
Self-Supervised Learning", ICML 2024) with a total-coding-rate loss. These functions measure it:
the spectrum of the centred feature matrix and its effective rank (Roy & Vetterli, "The effective
rank: a measure of effective dimensionality", EUSIPCO 2007).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from solo_ext.utils.runfolder import publish, temporary_name

TITLE_WIDTH_CHARS = 60


def singular_values(features: Tensor) -> Tensor:
    """Singular values of the centred feature matrix.

    Args:
        features: (N, D) features of N samples, any float dtype and device.

    Returns:
        (min(N, D),) float64 on the CPU, descending. Centring removes the mean direction, so at
        most N - 1 of them are non-zero.
    """
    x = features.detach().to(device="cpu", dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not torch.isfinite(x).all():
        raise ValueError(f"features must be finite (no NaN or inf), (N, D) with N >= 2; got {tuple(x.shape)}")
    return torch.linalg.svdvals(x - x.mean(dim=0, keepdim=True))


def effective_rank_of_spectrum(singular_values: Tensor) -> float:
    """Effective rank exp(H(p)) with p_i = s_i / Σ_j s_j (Roy & Vetterli 2007).

    Args:
        singular_values: (K,) non-negative singular values.

    Returns:
        A float in [1, K]: K for a flat spectrum, 1 when one direction holds everything. Zero
        singular values contribute nothing (0·log 0 = 0); an all-zero spectrum (constant features,
        complete collapse) gives 1, the measure's minimum.
    """
    s = singular_values.detach().to(device="cpu", dtype=torch.float64)
    total = s.sum()
    if total <= 0:
        return 1.0
    p = s[s > 0] / total
    return math.exp(-(p * p.log()).sum().item())


def effective_rank(features: Tensor) -> float:
    """Effective rank of the centred features (N, D); a float in [1, min(N, D)].

    See :func:`effective_rank_of_spectrum`; scale-invariant, so comparable across runs.
    """
    return effective_rank_of_spectrum(singular_values(features))


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path of its own next to ``path`` (the writer creates the file there); on
    success it is fsynced, given the umask's mode and renamed onto ``path``
    (:func:`solo_ext.utils.runfolder.publish`, the project's one atomic writer).

    A reader (wandb, a browser, another process) never sees a half-written file, and a failed
    write leaves the previous file in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left only when the write or the move failed


def plot_spectra(spectra: Mapping[str, Tensor] | Tensor, path: str | Path, title: str = "") -> Path:
    """Plot normalised singular-value spectra s_i / Σ_j s_j against i on a log scale, as a PNG.

    Args:
        spectra: ``{label: (K,) singular values}`` to overlay several runs (e.g. MAE vs U-MAE), or
            one (K,) tensor. Each curve's legend shows its effective rank.
        path: the PNG to write (atomically; parent folders are created).
        title: figure title.

    Returns:
        ``path`` as a Path.
    """
    if isinstance(spectra, Tensor):
        spectra = {"": spectra}
    # A Figure with its own Agg canvas, not pyplot: no display needed and no global backend
    # state changed for the rest of the process.
    fig = Figure(figsize=(5, 3.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, s in spectra.items():
        s = s.detach().to(device="cpu", dtype=torch.float64)
        total = s.sum().item()
        normalised = (s / total if total > 0 else s).numpy()
        rank = effective_rank_of_spectrum(s)
        name = f"{label} (eff. rank {rank:.1f})" if label else f"eff. rank {rank:.1f}"
        ax.plot(range(1, len(normalised) + 1), normalised, marker=".", markersize=3, label=name)
    # Zero singular values (centring, N < D) cannot be drawn on a log axis; leave them out.
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("normalised singular value")
    # Run names make long titles; wrap them rather than let the figure crop them.
    ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH_CHARS)), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_spectrum(singular_values: Tensor, path: str | Path, title: str = "") -> Path:
    """Plot one run's normalised spectrum; see :func:`plot_spectra`."""
    return plot_spectra(singular_values, path, title)
