"""Hydra composition errors from main_pretrain.py and main_linear.py: one line in the user's own
words (with the ++ hint where it applies), exit code 2, nothing written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from solo_ext.config.errors import ConfigError
from solo_ext.config.pretrain import parse_cfg
from solo_ext.run.hydra_check import split_argv
from tests.methods.tiny import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, script, *argv):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--config-name", "mae.yaml", "enable_progress_bar=False"],
            "error: enable_progress_bar=False: enable_progress_bar is not a key of mae.yaml; to add it, "
            "write ++enable_progress_bar=False",
        ),
        (
            ["--config-name", "mae.yaml", "+seed=3"],
            "error: +seed=3: seed is already in mae.yaml; write seed=3",
        ),
        (["--config-name", "mae.yaml", "seed=[1"], "error: seed=[1: not a valid override ("),
        (
            ["--config-name", "u-mea.yaml"],
            "error: --config-name='u-mea.yaml': no such recipe in ",
        ),
        (
            ["--config-name", "mae.yaml", "++maxepochs=3"],
            "error: maxepochs=3: unknown key; did you mean 'max_epochs'?",
        ),
    ],
)
def test_composition_errors_are_one_line_exit_2_nothing_written(tmp_path, argv, expected):
    result = run(tmp_path, "main_pretrain.py", *argv)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected) and len(lines[0]) <= 220, lines
    assert list(tmp_path.iterdir()) == []


def test_main_linear_too(tmp_path):
    result = run(tmp_path, "main_linear.py", "--config-name", "linear.yaml", "num_sanity_val_steps=0")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "error: num_sanity_val_steps=0: num_sanity_val_steps is not a key of linear.yaml; to add it, write ++"
    )


def test_unknown_top_level_key_is_a_short_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_cfg({**tiny_cfg(tmp_path), "zzz_unknown": 1})
    assert (
        str(err.value).startswith("zzz_unknown=1: unknown key; not one of the") and len(str(err.value)) < 120
    )


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--config-name"], "command: '--config-name' is not followed by a value"),
        (["--config-path=", "a=1"], "command: '--config-path=' is not followed by a value"),
        (["-m", "a=1"], "command: '-m' is not a Hydra option main_pretrain.py takes"),
    ],
)
def test_split_argv_refuses_in_one_line(words, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        split_argv(words)


def test_split_argv_reads_both_flag_forms():
    assert split_argv(["-cp", "here", "--config-name=mae.yaml", "seed=1"]) == ("here", "mae.yaml", ["seed=1"])


def test_check_composition_leaves_hydra_options_to_hydra_and_reads_both_flag_forms():
    from solo_ext.run.hydra_check import check_composition

    recipes = ROOT / "scripts" / "pretrain" / "digits"
    # a multirun (or --help, --cfg) is Hydra's: nothing is composed here, even with a bad key
    check_composition(["-m", "--config-name", "mae.yaml", "no_such_key=1"], recipes, ROOT)
    with pytest.raises(SystemExit) as info:
        check_composition(["-cn=mae.yaml", "no_such_key=1"], recipes, ROOT)
    assert info.value.code == 2
