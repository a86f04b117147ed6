"""Masking noise as a function of (seed, epoch, crop, sample index, patch): counter-based, so a
sample gets the same mask whichever process or batch position it lands in. With it, B/2 samples
on each of 2 processes train exactly like B samples on one (``method_kwargs.index_masks``)."""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _pcg_hash(x: torch.Tensor) -> torch.Tensor:
    """PCG's output permutation on 32-bit values held in int64 (products stay below 2^63)."""
    state = (x * 747796405 + 2891336453) & _MASK32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & _MASK32
    return ((word >> 22) ^ word) & _MASK32


def index_noise(indexes: torch.Tensor, num_patches: int, seed: int, epoch: int, crop: int) -> torch.Tensor:
    """(N,) dataset indexes -> (N, num_patches) float32 scores in [0, 1), a pure function of the
    arguments (no RNG state)."""
    key = _pcg_hash(torch.tensor([(seed & _MASK32)], device=indexes.device))
    key = _pcg_hash(key ^ (epoch & _MASK32))
    key = _pcg_hash(key ^ (crop & _MASK32))
    per_sample = _pcg_hash(key ^ (indexes.long() & _MASK32)).unsqueeze(1)
    patches = torch.arange(num_patches, device=indexes.device)
    bits = _pcg_hash(per_sample ^ _pcg_hash(patches + 0x9E3779B9 & _MASK32).unsqueeze(0))
    return bits.float() / 2.0**32
