"""Optimizers: the factory (solo-learn's names, parameter groups, layer decay, the lr schedule) and LARS."""
