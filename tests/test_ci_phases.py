"""Every test runs in some phase of .ci/run: README's command (``-m "not slow"``), the DALI phase
(with the dali extra installed and SOLO_EXT_REQUIRE_DALI=1), the slow phase and the SLURM phase
(after installing slurm-wlm and munge, SOLO_EXT_REQUIRE_SLURM=1), each slow test in exactly one.
A test that needs an optional package says so with a marker a phase selects, never with
``importorskip`` (which skips it in every phase where the package is missing, so silently in all
of them)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def _phase_expressions() -> list[str]:
    """The -m expressions of the pytest commands .ci/run runs: README's, then its own."""
    readme = (REPO / "README.md").read_text()
    command = readme.split("<!-- test-command -->", 1)[1].splitlines()[2]
    run = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("bash -c")]
    pattern = re.compile(r"""pytest -q -m (?:"([^"]+)"|'([^']+)'|(\w+))""")
    return ["".join(m.groups("")) for line in [command, *run] for m in pattern.finditer(line)]


def test_the_phases_select_fast_dali_and_slow_tests():
    phases = _phase_expressions()
    assert phases == ["not slow", "(dali or dali_format) and not slow", "slow and not slurm", "slurm"]

    def selected(markers):
        # pytest's marker expressions, evaluated as Python booleans over the test's markers
        names = {"slow", "dali", "dali_format", "slurm"}
        return [eval(p, {}, {name: name in markers for name in names}) for p in phases]  # noqa: S307

    for markers in ({}, {"slow"}, {"dali"}, {"dali", "slow"}, {"dali_format"}, {"slurm", "slow"}):
        assert any(selected(markers)), markers
    assert selected({"dali"})[1] and not selected({"dali", "slow"})[1]
    # a slow test runs in one of the two slow phases, never both
    assert selected({"slow"})[2:] == [True, False] and selected({"slow", "slurm"})[2:] == [False, True]


def test_no_test_skips_itself_on_a_missing_package():
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != "test_ci_phases.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "importorskip(" in line
    ]
    assert not offenders, f"use a marker (e.g. @pytest.mark.dali) instead of importorskip: {offenders}"


@pytest.mark.parametrize("marker", ["dali", "dali_format", "slow", "slurm"])
def test_markers_are_registered(marker):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"{marker}: ' in pyproject
