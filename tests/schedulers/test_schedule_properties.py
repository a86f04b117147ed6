"""Laws of the schedules, on drawn parameters and epochs (hypothesis), as documented in
solo_ext.schedulers.weights and solo_ext.optim.factory.warmup_cosine:

- linear and cosine ramps: ``start_weight`` before ``start_epoch``, ``end_weight`` from ``end_epoch``
  on, monotone from one to the other in between (so bounded by them);
- triangle: monotone from ``start_weight`` to ``max_weight`` on [start, mid], then to ``end_weight``
  on [mid, end], within the three weights everywhere;
- step: 0 before the warm-up, then ``weight · scale**k`` (k milestones passed), so non-increasing in
  magnitude for |scale| <= 1;
- warmup: ``base_weight`` or ``weight``, ``weight`` exactly on [warmup, warmup + reg_epochs);
- interval: one of the intervals' weights or 0;
- every schedule returns a Python float, the same for every step at a given epoch;
- warmup_cosine (the lr): from ``start`` towards ``base`` during the warm-up, then down to ``end``,
  within [min, max] of the three, ``base`` at the end of the warm-up.
"""

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from solo_ext.optim.factory import warmup_cosine
from solo_ext.schedulers.weights import build_weight_schedule

FAST = settings(max_examples=40, deadline=None, database=None)
weights = st.floats(-10, 10)
epochs = st.floats(0, 100)
TOL = 1e-9


def sorted_epochs(n):
    return st.lists(epochs, min_size=n, max_size=n).map(sorted)


def monotone(values, start, end):
    """values go from start towards end without turning back (within rounding)."""
    sign = 1 if end >= start else -1
    return all(sign * (b - a) >= -TOL for a, b in zip(values, values[1:]))


@FAST
@given(name=st.sampled_from(["linear", "cosine"]), ends=sorted_epochs(2), w=st.tuples(weights, weights))
def test_ramps_are_monotone_between_their_weights(name, ends, w):
    cfg = {
        "name": name,
        "start_weight": w[0],
        "end_weight": w[1],
        "start_epoch": ends[0],
        "end_epoch": ends[1],
    }
    schedule = build_weight_schedule(cfg)
    grid = [ends[0] - 1 + (ends[1] - ends[0] + 2) * i / 200 for i in range(201)]
    values = [schedule(step, max(epoch, 0.0)) for step, epoch in enumerate(grid)]
    assert monotone(values, *w)
    assert all(min(w) - TOL <= v <= max(w) + TOL for v in values)
    assert schedule(0, ends[1]) == w[1]
    if ends[0] > 0:
        assert schedule(0, ends[0] / 2) == w[0]


@FAST
@given(points=sorted_epochs(3), w=st.tuples(weights, weights, weights), epoch=epochs)
def test_triangle_is_monotone_on_each_side_and_bounded(points, w, epoch):
    start, mid, end = points
    cfg = {
        "name": "triangle",
        "start_weight": w[0],
        "max_weight": w[1],
        "end_weight": w[2],
        "start_epoch": start,
        "mid_epoch": mid,
        "end_epoch": end,
    }
    schedule = build_weight_schedule(cfg)
    assert min(w) - TOL <= schedule(0, epoch) <= max(w) + TOL
    rising = [schedule(0, start + (mid - start) * i / 50) for i in range(50)]
    falling = [schedule(0, mid + (end - mid) * i / 50) for i in range(50)] + [schedule(0, end)]
    assert monotone(rising, w[0], w[1]) and monotone(falling, w[1], w[2])
    assert schedule(0, end) == w[2]


@FAST
@given(
    weight=weights,
    scale=st.floats(-1, 1),
    steps=st.lists(epochs, min_size=1, max_size=5, unique=True).map(sorted),
    warmup=epochs,
    epoch=epochs,
)
def test_step_shrinks_by_scale_at_each_milestone(weight, scale, steps, warmup, epoch):
    schedule = build_weight_schedule(
        {"name": "step", "weight": weight, "steps": steps, "scale": scale, "warmup_epochs": warmup}
    )
    value = schedule(0, epoch)
    if epoch < warmup:
        assert value == 0.0
        return
    passed = sum(1 for milestone in steps if milestone <= epoch)
    assert math.isclose(value, weight * scale**passed, rel_tol=1e-12, abs_tol=1e-300)
    later = schedule(0, epoch + 7.5)
    assert abs(later) <= abs(value) + TOL


@FAST
@given(warmup=epochs, reg=st.none() | epochs, weight=weights, base=weights, epoch=epochs)
def test_warmup_holds_its_weight_only_inside_the_window(warmup, reg, weight, base, epoch):
    cfg = {"name": "warmup", "warmup_epochs": warmup, "weight": weight, "base_weight": base}
    if reg is not None:
        cfg["reg_epochs"] = reg
    inside = warmup <= epoch and (reg is None or epoch < warmup + reg)
    assert build_weight_schedule(cfg)(0, epoch) == (weight if inside else base)


@FAST
@given(
    bounds=st.lists(epochs, min_size=2, max_size=8, unique=True).map(sorted),
    w=st.lists(weights, min_size=4, max_size=4),
    epoch=st.floats(0, 120),
)
def test_interval_is_one_of_its_weights_or_zero(bounds, w, epoch):
    # consecutive pairs of the sorted bounds: non-overlapping intervals, touching or not
    intervals = [[bounds[i], bounds[i + 1], w[i // 2 % 4]] for i in range(0, len(bounds) - 1, 2)]
    schedule = build_weight_schedule({"name": "interval", "intervals": intervals})
    expected = next((weight for start, end, weight in intervals if start <= epoch < end), 0.0)
    assert schedule(0, epoch) == expected


@FAST
@given(
    cfg=st.sampled_from(
        [
            {"name": "constant", "weight": 0.3},
            {"name": "warmup", "warmup_epochs": 3, "weight": 1.0},
            {"name": "step", "weight": 1.0, "steps": [4, 9]},
            {"name": "linear", "start_weight": 0, "end_weight": 1, "end_epoch": 10},
            {"name": "cosine", "start_weight": 1, "end_weight": 0, "start_epoch": 2, "end_epoch": 6},
            {"name": "interval", "intervals": [[0, 3, 0.5], [5, 8, 2.0]]},
            {
                "name": "triangle",
                "start_weight": 0,
                "max_weight": 1,
                "end_weight": 0.5,
                "start_epoch": 1,
                "mid_epoch": 4,
                "end_epoch": 9,
            },
        ]
    ),
    epoch=epochs,
    steps=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
)
def test_a_float_of_the_epoch_alone(cfg, epoch, steps):
    schedule = build_weight_schedule(cfg)
    first, second = (schedule(step, epoch) for step in steps)
    assert type(first) is float and first == second


@FAST
@given(
    lrs=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    warmup=st.floats(0, 50),
    extra=st.floats(0, 100),
    steps=st.lists(st.floats(0, 200), min_size=2, max_size=20),
)
def test_warmup_cosine_rises_then_falls_within_its_lrs(lrs, warmup, extra, steps):
    base, start, end = lrs
    assume(base >= end)
    total = warmup + extra
    values = {step: warmup_cosine(step, warmup, total, base, start, end) for step in sorted(steps)}
    assert all(min(lrs) - TOL <= v <= max(lrs) + TOL for v in values.values())
    during = [v for step, v in values.items() if step < warmup]
    after = [v for step, v in values.items() if step >= warmup]
    assert monotone(during, start, base)
    assert monotone(after, base, end)
    assert math.isclose(warmup_cosine(warmup, warmup, total, base, start, end), base, abs_tol=1e-12)
    if total > warmup:  # (a tiny extra can vanish in the sum)
        assert math.isclose(warmup_cosine(total + 1, warmup, total, base, start, end), end, abs_tol=1e-12)
