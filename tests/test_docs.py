"""The docs stay true: they point only at files the repository has."""

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
