"""One integer seed per (run seed, epoch, rank), shared by the training RNGs and the loaders."""

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed that differs per epoch and per rank and follows from them alone, so a resumed
    epoch draws what the uninterrupted run drew."""
    return ((seed * 1_000_003 + epoch) * 10_007 + rank) % 2**63


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed Python's, NumPy's and torch's global generators from :func:`epoch_seed`."""
    mixed = epoch_seed(seed, epoch, rank)
    random.seed(mixed)
    np.random.seed(mixed % 2**32)
    torch.manual_seed(mixed)
