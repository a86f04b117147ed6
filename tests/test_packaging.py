"""What the package declares matches what it uses: every third-party import of solo_ext is a
requirement of setup.py (install_requires or an extra), and the version is stated once."""

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import solo_ext

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "solo_ext"

# Import names that differ from the name of the distribution that provides them. Any other
# import name is taken to be its distribution's name. `nvidia` is the namespace of several
# distributions; solo_ext imports only nvidia.dali, from the dali extra.
DISTRIBUTION_OF = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "hydra": "hydra-core",
    "nvidia": "nvidia-dali-cuda120",
}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_imports(root: Path) -> dict[str, list[str]]:
    """Top-level module name -> the files under ``root`` that import it (absolute imports, at
    any depth of the file: lazy imports inside functions count too)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(root.parent)))
    return found


def third_party_imports(root: Path = PACKAGE) -> dict[str, list[str]]:
    return {
        name: files
        for name, files in top_level_imports(root).items()
        if name not in sys.stdlib_module_names and name not in ("__future__", root.name)
    }


def setup_keywords() -> dict[str, ast.expr]:
    """The keyword arguments of setup.py's setup() call, as expressions (read, not run)."""
    call = next(
        node
        for node in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    return {kw.arg: kw.value for kw in call.keywords}


def declared_requirements() -> dict[str, str]:
    """Normalised distribution name -> where setup.py declares it (``install_requires`` or
    ``extra <name>``), read from the literal lists of its setup() call."""
    keywords = setup_keywords()
    groups = {"install_requires": ast.literal_eval(keywords["install_requires"])}
    for extra, requirements in ast.literal_eval(keywords.get("extras_require", ast.Dict([], []))).items():
        groups[f"extra {extra}"] = requirements
    declared: dict[str, str] = {}
    for where, requirements in groups.items():
        for requirement in requirements:
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
            declared.setdefault(normalise(name), where)
    return declared


def test_the_import_walk_sees_every_form(tmp_path):
    """The walk finds plain, dotted, aliased, from- and lazy imports, and skips relative ones,
    the standard library and the package itself."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("import os\nimport numpy as np\nfrom . import sub\n")
    (package / "sub" / "__init__.py").write_text(
        "from __future__ import annotations\nimport torch.nn\nfrom pkg.sub import x\n"
        "def f():\n    from PIL import Image\n    from .x import y\n"
    )
    assert sorted(third_party_imports(package)) == ["PIL", "numpy", "torch"]


def test_every_third_party_import_is_declared():
    declared = declared_requirements()
    undeclared = {
        name: files
        for name, files in third_party_imports().items()
        if normalise(DISTRIBUTION_OF.get(name, name)) not in declared
    }
    assert not undeclared, (
        "solo_ext imports modules whose distribution setup.py does not declare (add it to "
        "install_requires or an extra, or to DISTRIBUTION_OF when its name differs): "
        + "; ".join(f"{name} in {', '.join(files)}" for name, files in sorted(undeclared.items()))
    )


def test_distribution_names_are_those_installed():
    """Where a distribution of DISTRIBUTION_OF (or named like its module) is installed here, it
    does provide that module: the table cannot map an import to the wrong distribution."""
    installed = metadata.packages_distributions()
    provided_by = {name: {normalise(d) for d in dists} for name, dists in installed.items()}
    checked = 0
    for name in third_party_imports():
        distribution = DISTRIBUTION_OF.get(name, name)
        try:
            metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            continue  # an extra not installed here (dali)
        assert normalise(distribution) in provided_by.get(name, set()), (name, distribution)
        checked += 1
    assert checked >= 10  # the core requirements are installed wherever the tests run


def test_the_version_is_stated_once():
    """setup.py reports the package's __version__, and the changelog has a section for it below
    the Unreleased one."""
    setup_version = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert setup_version == solo_ext.__version__
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[:2] == ["Unreleased", solo_ext.__version__]


def test_one_python_floor():
    """setup.py's python_requires, ruff's target version and the README say the same Python."""
    requires = ast.literal_eval(setup_keywords()["python_requires"])
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)", requires).groups()
    pyproject = (ROOT / "pyproject.toml").read_text()
    target = re.search(r'^target-version = "py(\d)(\d+)"$', pyproject, re.MULTILINE)
    assert target.groups() == (major, minor)
    assert f"Python {major}.{minor} or newer" in (ROOT / "README.md").read_text()
    assert sys.version_info >= (int(major), int(minor))


def test_install_requires_names_each_distribution_once():
    requirements = ast.literal_eval(setup_keywords()["install_requires"])
    names = [normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group(0)) for r in requirements]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


@pytest.mark.slow
def test_every_module_imports_in_a_venv_of_install_requires_alone(tmp_path):
    """A fresh virtual environment gets the package with install_requires pinned by
    constraints.txt, no extra; every module of solo_ext then imports (from the installed copy,
    not this tree), and no dev tool came along."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(ROOT)]
    subprocess.run(install, check=True, cwd=tmp_path, timeout=1800)
    walk = (
        "import importlib, pkgutil, solo_ext, sys\n"
        "assert 'site-packages' in solo_ext.__file__, solo_ext.__file__\n"
        "failed = []\n"
        "for info in pkgutil.walk_packages(solo_ext.__path__, 'solo_ext.'):\n"
        "    try:\n"
        "        importlib.import_module(info.name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{info.name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed) or 'all imported')\n"
        "print(sum(1 for _ in pkgutil.walk_packages(solo_ext.__path__, 'solo_ext.')), 'modules')\n"
        "for tool in ('pytest', 'hypothesis', 'transformers', 'mypy'):\n"
        "    print(tool, importlib.util.find_spec(tool) is not None)\n"
    )
    out = subprocess.run([python, "-c", walk], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "all imported", out.stdout
    assert int(lines[1].split()[0]) >= 60
    assert lines[2:] == ["pytest False", "hypothesis False", "transformers False", "mypy False"]
