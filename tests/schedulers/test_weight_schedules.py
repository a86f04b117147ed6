import copy
import math

import pytest
from omegaconf import OmegaConf

from solo_ext.config.errors import ConfigError, validate
from solo_ext.schedulers.weights import SCHEDULE_SPEC, WEIGHT_SCHEDULES, build_weight_schedule

KEY = "method_kwargs.reg_scheduler"

# (config, [(epoch, expected weight), ...]); boundaries, fractional epochs, before and after
TABLES = {
    "constant": (
        {"name": "constant", "weight": 0.3},
        [(0, 0.3), (2.5, 0.3), (1000, 0.3)],
    ),
    "warmup (MAGMA IN-100)": (
        {"name": "warmup", "base_weight": 0, "warmup_epochs": 10, "weight": 1, "reg_epochs": 100},
        [
            (0, 0.0),
            (9, 0.0),
            (9.99, 0.0),
            (10, 1.0),
            (10.5, 1.0),
            (109, 1.0),
            (109.9, 1.0),
            (110, 0.0),
            (400, 0.0),
        ],
    ),
    "warmup forever": (
        {"name": "warmup", "warmup_epochs": 2, "weight": 0.5},
        [(0, 0.0), (1.999, 0.0), (2, 0.5), (1e6, 0.5)],
    ),
    "warmup with base weight": (
        {"name": "warmup", "base_weight": 0.1, "warmup_epochs": 0, "weight": 2.0, "reg_epochs": 3},
        [(0, 2.0), (2.9, 2.0), (3, 0.1), (4, 0.1)],
    ),
    "triangle": (
        {
            "name": "triangle",
            "start_weight": 0.0,
            "max_weight": 1.0,
            "end_weight": 0.5,
            "start_epoch": 2,
            "mid_epoch": 6,
            "end_epoch": 16,
        },
        [(0, 0.0), (1.9, 0.0), (2, 0.0), (3, 0.25), (4.5, 0.625), (6, 1.0), (11, 0.75), (16, 0.5), (30, 0.5)],
    ),
    "triangle with equal start and mid": (
        {
            "name": "triangle",
            "start_weight": 0.2,
            "max_weight": 1.0,
            "end_weight": 0.0,
            "start_epoch": 4,
            "mid_epoch": 4,
            "end_epoch": 8,
        },
        [(3.99, 0.2), (4, 1.0), (6, 0.5), (8, 0.0)],
    ),
    "triangle with all points equal": (
        {
            "name": "triangle",
            "start_weight": 0.2,
            "max_weight": 1.0,
            "end_weight": 0.7,
            "start_epoch": 5,
            "mid_epoch": 5,
            "end_epoch": 5,
        },
        [(4.5, 0.2), (5, 0.7), (6, 0.7)],
    ),
    "step": (
        {"name": "step", "weight": 1.0, "steps": [10, 20], "scale": 0.5},
        [(0, 0.0), (4.99, 0.0), (5, 1.0), (9.5, 1.0), (10, 0.5), (19, 0.5), (20, 0.25), (100, 0.25)],
    ),
    "step with configurable warmup": (
        {"name": "step", "weight": 2.0, "steps": [3], "warmup_epochs": 0},
        [(0, 2.0), (2.5, 2.0), (3, 2.0 * 0.1)],
    ),
    "interval": (
        {"name": "interval", "intervals": [[10, 20, 0.5], [0, 5, 1.0], [20, 30, 2.0]]},
        [
            (0, 1.0),
            (4.9, 1.0),
            (5, 0.0),
            (9.99, 0.0),
            (10, 0.5),
            (19.5, 0.5),
            (20, 2.0),
            (29.9, 2.0),
            (30, 0.0),
        ],
    ),
    "linear": (
        {"name": "linear", "start_weight": 0.0, "end_weight": 1.0, "start_epoch": 2, "end_epoch": 6},
        [(0, 0.0), (2, 0.0), (3, 0.25), (4.5, 0.625), (6, 1.0), (7, 1.0)],
    ),
    "linear down from epoch 0": (
        {"name": "linear", "start_weight": 1.0, "end_weight": 0.2, "end_epoch": 4},
        [(0, 1.0), (1, 0.8), (4, 0.2)],
    ),
    "cosine": (
        {"name": "cosine", "start_weight": 0.0, "end_weight": 1.0, "start_epoch": 2, "end_epoch": 6},
        [
            (1, 0.0),
            (2, 0.0),
            (3, (1 - math.cos(math.pi / 4)) / 2),
            (4, 0.5),
            (5, 0.5 + math.sqrt(2) / 4),
            (6, 1.0),
        ],
    ),
    "cosine as a jump": (
        {"name": "cosine", "start_weight": 1.0, "end_weight": 0.0, "start_epoch": 3, "end_epoch": 3},
        [(2.9, 1.0), (3, 0.0)],
    ),
}


@pytest.mark.parametrize("case", list(TABLES))
def test_schedule_table(case):
    cfg, table = TABLES[case]
    schedule = build_weight_schedule(cfg)
    for epoch, expected in table:
        value = schedule(step=123, epoch=epoch)
        assert type(value) is float, (case, epoch)
        assert math.isclose(value, expected, rel_tol=1e-12, abs_tol=1e-12), (case, epoch, value)


def test_every_registered_schedule_has_a_table():
    assert {cfg["name"] for cfg, _ in TABLES.values()} == set(WEIGHT_SCHEDULES)


@pytest.mark.parametrize("case", list(TABLES))
def test_pure_and_does_not_mutate_the_config(case):
    cfg, table = TABLES[case]
    given = copy.deepcopy(cfg)
    schedule = build_weight_schedule(given)
    values = [schedule(step, epoch) for step, (epoch, _) in enumerate(table)]
    # again, in reverse order: a stateful schedule (MAGMA's step) would differ
    again = [schedule(step, epoch) for step, (epoch, _) in reversed(list(enumerate(table)))]
    assert values == again[::-1]
    assert given == cfg
    assert build_weight_schedule(given) == schedule


def test_accepts_omegaconf_and_leaves_it_unchanged():
    cfg = OmegaConf.create({"name": "step", "weight": 1.0, "steps": [6, 8]})
    schedule = build_weight_schedule(cfg)
    assert [schedule(0, e) for e in (5, 6, 8, 9)] == [1.0, 0.1, 1.0 * 0.1**2, 1.0 * 0.1**2]
    assert OmegaConf.to_container(cfg) == {"name": "step", "weight": 1.0, "steps": [6, 8]}
    intervals = OmegaConf.create({"name": "interval", "intervals": [[0, 2, 1.0]]})
    assert build_weight_schedule(intervals)(0, 1) == 1.0


def _error(cfg):
    with pytest.raises(ConfigError) as info:
        validate(SCHEDULE_SPEC, cfg, KEY)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_name_lists_valid_names_and_suggests():
    message = _error({"name": "warmpu", "weight": 1})
    assert message.startswith(f"{KEY}.name='warmpu': must be one of ")
    assert "constant, cosine, interval, linear, step, triangle, warmup" in message
    assert "did you mean 'warmup'?" in message
    assert "did you mean" not in _error({"name": "zzz"})
    assert _error({"name": 3}).startswith(f"{KEY}.name=3: must be one of")
    assert _error({"weight": 1}).startswith(f"{KEY}.name: missing; allowed: constant")
    assert _error([1, 2]).startswith(f"{KEY}=[1, 2]: must be a mapping")


def test_unknown_parameter_lists_allowed_ones():
    message = _error({"name": "warmup", "warmup_epoch": 3, "weight": 1})
    assert message.startswith(f"{KEY}.warmup_epoch=3: unknown key; ")
    assert "allowed: base_weight, interval, name, reg_epochs, warmup_epochs, weight" in message
    assert "did you mean 'warmup_epochs'?" in message
    # MAGMA's interval schedule took max_epochs; ours has no table
    assert "max_epochs" in _error({"name": "interval", "intervals": [[0, 1, 1]], "max_epochs": 10})


@pytest.mark.parametrize(
    "cfg, param",
    [
        ({"name": "constant"}, "weight"),
        ({"name": "warmup", "weight": 1}, "warmup_epochs"),
        ({"name": "step", "weight": 1}, "steps"),
        ({"name": "interval"}, "intervals"),
        ({"name": "linear", "start_weight": 0, "end_weight": 1}, "end_epoch"),
        (
            {"name": "triangle", "start_weight": 0, "max_weight": 1, "end_weight": 0, "start_epoch": 0},
            "mid_epoch",
        ),
    ],
)
def test_missing_required_parameter(cfg, param):
    assert _error(cfg) == f"{KEY}.{param}: missing"


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"name": "constant", "weight": True}, "weight=True: must be a number"),
        ({"name": "constant", "weight": "0.1"}, "weight='0.1': must be a number"),
        ({"name": "constant", "weight": float("nan")}, "weight=nan: must be finite"),
        ({"name": "warmup", "warmup_epochs": None, "weight": 1}, "warmup_epochs=None: must be a number"),
        ({"name": "step", "weight": 1, "steps": 10}, "steps=10: must be a list"),
        ({"name": "step", "weight": 1, "steps": "10"}, "steps='10': must be a list"),
        ({"name": "step", "weight": 1, "steps": [10, "x"]}, "steps[1]='x': must be a number"),
        ({"name": "interval", "intervals": [[0, 1, False]]}, "intervals[0][2]=False: must be a number"),
        ({"name": "interval", "intervals": [5]}, "intervals[0]=5: must be a list"),
        ({"name": "interval", "intervals": [[0, 1]]}, "intervals[0]=[0, 1]: has no item [2]"),
    ],
)
def test_wrong_type(cfg, expected):
    assert _error(cfg).startswith(f"{KEY}.{expected}")


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"name": "warmup", "warmup_epochs": -1, "weight": 1}, "warmup_epochs=-1: must be a number >= 0"),
        (
            {"name": "warmup", "warmup_epochs": 1, "weight": 1, "reg_epochs": -2},
            "reg_epochs=-2: must be a number >= 0",
        ),
        ({"name": "step", "weight": 1, "steps": [-3]}, "steps[0]=-3: must be a number >= 0"),
        (
            {"name": "step", "weight": 1, "steps": [], "warmup_epochs": -1},
            "warmup_epochs=-1: must be a number >= 0",
        ),
        ({"name": "interval", "intervals": [[-1, 2, 1]]}, "intervals[0][0]=-1: must be a number >= 0"),
        (
            {"name": "cosine", "start_weight": 0, "end_weight": 1, "end_epoch": -4},
            "end_epoch=-4: must be a number >= 0",
        ),
        (
            {
                "name": "triangle",
                "start_weight": 0,
                "max_weight": 1,
                "end_weight": 0,
                "start_epoch": -1,
                "mid_epoch": 2,
                "end_epoch": 3,
            },
            "start_epoch=-1: must be a number >= 0",
        ),
    ],
)
def test_negative_epochs(cfg, expected):
    assert _error(cfg) == f"{KEY}.{expected}"


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (
            {
                "name": "triangle",
                "start_weight": 0,
                "max_weight": 1,
                "end_weight": 0,
                "start_epoch": 5,
                "mid_epoch": 3,
                "end_epoch": 10,
            },
            "mid_epoch=3: must satisfy start_epoch <= mid_epoch <= end_epoch, but start_epoch=5",
        ),
        (
            {
                "name": "triangle",
                "start_weight": 0,
                "max_weight": 1,
                "end_weight": 0,
                "start_epoch": 1,
                "mid_epoch": 3,
                "end_epoch": 2,
            },
            "end_epoch=2: must satisfy start_epoch <= mid_epoch <= end_epoch, but mid_epoch=3",
        ),
        (
            {"name": "linear", "start_weight": 0, "end_weight": 1, "start_epoch": 5, "end_epoch": 2},
            "end_epoch=2: must satisfy start_epoch <= end_epoch, but start_epoch=5",
        ),
        (
            {"name": "step", "weight": 1, "steps": [20, 10]},
            "steps=[20, 10]: milestones must be strictly increasing",
        ),
        (
            {"name": "step", "weight": 1, "steps": [10, 10]},
            "steps=[10, 10]: milestones must be strictly increasing",
        ),
        (
            {"name": "interval", "intervals": [[5, 5, 1]]},
            "intervals[0]=[5, 5, 1]: start must be < end (the end is exclusive)",
        ),
        (
            {"name": "interval", "intervals": [[10, 20, 1], [0, 5, 1], [4, 8, 2]]},
            "intervals=[[10, 20, 1], [0, 5, 1], [4, 8, 2]]: intervals must not overlap, "
            "but intervals[1] and intervals[2] do",
        ),
        ({"name": "interval", "intervals": []}, "intervals=[]: must hold at least 1 item(s)"),
    ],
)
def test_inconsistent_ordering(cfg, expected):
    assert _error(cfg) == f"{KEY}.{expected}"


def test_touching_intervals_are_allowed():
    schedule = build_weight_schedule({"name": "interval", "intervals": [[0, 5, 1.0], [5, 10, 2.0]]})
    assert [schedule(0, e) for e in (4.99, 5, 9.99, 10)] == [1.0, 2.0, 2.0, 0.0]
