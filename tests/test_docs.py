"""The docs stay true: they point only at files the repository has, and where they restate
what the code holds, a test compares the two."""

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Files outside the repository that earlier notes pointed at; a reader of a clone has neither.
OUTSIDE = ("DESIGN.md", "../shared")


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in listed.split("\0") if name]


def tracked_text() -> dict[Path, str]:
    texts = {}
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary (checkpoint fixtures, pictures), or deleted in the working tree
        if "\0" not in text:
            texts[path] = text
    return texts


def test_no_file_points_outside_the_repository():
    this_file = Path(__file__).resolve()
    pointing = [
        f"{path.relative_to(ROOT)}:{number}: {name}"
        for path, text in tracked_text().items()
        if path != this_file
        for number, line in enumerate(text.splitlines(), 1)
        for name in OUTSIDE
        if name in line
    ]
    assert not pointing, "files name what the repository does not have:\n" + "\n".join(pointing)


# [text](target) in markdown; targets with a scheme (https:, mailto:) are not files
MARKDOWN_LINK = re.compile(r"\]\(([^()\s]+)\)")


def test_markdown_links_name_files_the_repository_has():
    present = set(tracked_files())
    broken = []
    for path, text in tracked_text().items():
        if path.suffix != ".md":
            continue
        for target in MARKDOWN_LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            linked = (path.parent / target.split("#")[0]).resolve()
            if linked not in present and not (linked.is_dir() and linked.is_relative_to(ROOT)):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to files the repository lacks:\n" + "\n".join(broken)


# "`NAME` in `path/to/module.py`": a doc saying where something is defined
DEFINED_IN = re.compile(r"`([A-Za-z_]\w*)` in `([\w/.-]+\.py)`")


def module_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_docs_say_where_a_name_is_defined_truly():
    wrong = []
    for path, text in tracked_text().items():
        if path.suffix != ".md":
            continue
        for name, module in DEFINED_IN.findall(" ".join(text.split())):
            if not (ROOT / module).is_file() or name not in module_level_names(ROOT / module):
                wrong.append(f"{path.relative_to(ROOT)}: {name} in {module}")
    assert not wrong, "docs place names where they are not defined:\n" + "\n".join(wrong)


# README's auto-resume list: "Keys compared (`SHOULD_MATCH` in `<file>`...): `key`, `key`, ..."
RESUME_KEYS = re.compile(
    r"Keys compared \(`(?P<name>\w+)` in `(?P<file>[\w/]+)\.py`[^)]*\):(?P<keys>(?:\s*`[^`]+`,?)+)"
)


def test_readme_lists_the_keys_auto_resume_compares():
    """The README's list of the keys auto-resume compares is the code's list, both ways; the
    README names the module that holds it."""
    found = RESUME_KEYS.search(" ".join((ROOT / "README.md").read_text().split()))
    assert found, "README.md has no 'Keys compared (`SHOULD_MATCH` in `<module>.py`): `key`, ...' list"
    module = importlib.import_module(found["file"].replace("/", "."))
    compared = set(getattr(module, found["name"]))
    listed = re.findall(r"`([^`]+)`", found["keys"])
    assert len(listed) == len(set(listed)), f"README lists a key twice: {listed}"
    assert set(listed) == compared, (
        f"README lists keys auto-resume does not compare: {sorted(set(listed) - compared)}; "
        f"README omits keys it compares: {sorted(compared - set(listed))}"
    )


def test_config_reference_is_the_schemas(capsys):
    """docs/config.md is what `python -m solo_ext.config.reference` prints today."""
    from solo_ext.config.reference import main

    main()
    assert (ROOT / "docs" / "config.md").read_text() == capsys.readouterr().out, (
        "docs/config.md is stale; regenerate it: python -m solo_ext.config.reference > docs/config.md"
    )


def test_config_reference_reads_ranges_choices_and_comments():
    """The page shows what the schema declares beside each key: a range of number_in, the choices
    of a literal, a default, the comment above the field, a block of a list in its own table."""
    from solo_ext.config.reference import build, render

    page = render(build())
    assert "| `method_kwargs.mask_ratio` | float | `0.75` | in [0, 1) |" in page
    assert "| `knn_eval.distance_func` | str | `euclidean` | one of `cosine`, `euclidean` |" in page
    assert "| `compile` | bool | `False` |  | torch.compile the encoder's forward and the decoder" in page
    assert "| `augmentations` | list of [AugmentationSpec](#augmentationspec) | required |" in page
    assert "\n## AugmentationSpec\n" in page
    # the default that depends on the machine is stated, not the number this machine gives
    assert "| `data.num_workers` | int | min(4, the CPUs this process may use) | >= 0 |" in page


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    pages = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md"))
    assert [page for page in pages if f"]({page})" not in readme] == []
