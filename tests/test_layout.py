"""The tests mirror the package: every folder of solo_ext has a folder of tests of the same name
(tests/<room>/), holding at least one test module."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_has_its_test_folder():
    rooms = sorted(p.name for p in (ROOT / "solo_ext").iterdir() if (p / "__init__.py").exists())
    missing = [room for room in rooms if not list((ROOT / "tests" / room).glob("test_*.py"))]
    assert not missing, f"package folders without tests/<folder>/test_*.py: {missing}"
    assert {"config", "data", "eval", "run", "utils"} <= set(rooms)
