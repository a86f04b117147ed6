"""The package's layers only look down: no module imports a layer above its own."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "solo_ext"

# bottom to top; a module may import its own layer and the layers below it
LAYERS = [
    {"utils"},
    {"losses", "schedulers"},
    {"regularizers", "backbones"},
    {"data"},
    {"eval", "optim"},
    {"methods"},
    {"results", "config"},
    {"run", "export", "report"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def room(module: str) -> str:
    """``solo_ext.config.schema`` -> ``config``; ``solo_ext.export`` -> ``export``."""
    return module.split(".")[1]


def imports() -> list[tuple[str, str]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "solo_ext":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("solo_ext."):
                found.append((module, node.module))
            elif isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names if a.name.startswith("solo_ext.")]
    return found


def test_every_room_has_a_layer():
    rooms = {room(m) for pair in imports() for m in pair}
    assert rooms <= set(RANK), rooms - set(RANK)


def test_no_import_runs_up_the_layers():
    upward = [f"{src} imports {dst}" for src, dst in imports() if RANK[room(dst)] > RANK[room(src)]]
    assert not upward, upward


def test_domain_layers_raise_no_config_error():
    domain = ("losses", "schedulers", "regularizers", "backbones", "data", "methods", "utils")
    offenders = [
        str(path.relative_to(PACKAGE))
        for name in domain
        for path in (PACKAGE / name).rglob("*.py")
        if re.search(r"import .*ConfigError|raise ConfigError", path.read_text())
    ]
    assert not offenders, offenders
