"""Orchestration: the pretraining, linear-evaluation, kNN and sweep runners and what they share
(trainer building, run folders and resume matching, Hydra composition errors)."""
