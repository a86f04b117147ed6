"""Evaluation while and after training: the weighted kNN, collapse diagnostics (effective rank,
spectra) and reconstruction pictures."""
