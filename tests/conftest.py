"""Project-wide test hooks: the ``dali`` marker.

Tests marked ``@pytest.mark.dali`` need NVIDIA DALI (the ``dali`` extra). Where it is not installed
they are skipped with the reason, unless ``SOLO_EXT_REQUIRE_DALI=1`` (set by ``.ci/run``), which
turns the skip into a failure so that CI cannot pass without running them.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

REQUIRE_DALI = "SOLO_EXT_REQUIRE_DALI"


def _dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("dali") is None or _dali_installed():
        return
    if os.environ.get(REQUIRE_DALI) == "1":
        install = 'pip install -c constraints.txt -e ".[dali]"'
        pytest.fail(f"{REQUIRE_DALI}=1 but NVIDIA DALI is not installed: {install}")
    pytest.skip('NVIDIA DALI is not installed (the dali extra: pip install -e ".[dali]")')
