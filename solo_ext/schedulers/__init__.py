"""Regularizer weight schedules (see :mod:`solo_ext.schedulers.weights`)."""

from solo_ext.schedulers.weights import WEIGHT_SCHEDULES, WeightSchedule, build_weight_schedule

__all__ = ["WEIGHT_SCHEDULES", "WeightSchedule", "build_weight_schedule"]
