"""A class subset of an ImageFolder dataset, e.g. ImageNet-100 from ImageNet, as symlinks or copies.

    python -m solo_ext.data.subset --classes imagenet100 --src /data/imagenet --dst /data/imagenet100

``--classes`` is ``imagenet100`` (the 100 WordNet ids of solo-learn's
``solo/data/dataset_subset/imagenet100_classes.txt``, shipped here as package data) or a text file
of class folder names, one a line (blank lines and lines starting with ``#`` are skipped). The
command reads ``<src>/train/<class>/`` and ``<src>/val/<class>/`` (ImageNet's val images sorted
into class folders) and writes ``<dst>/train/<class>`` and ``<dst>/val/<class>``: by default each a
symlink to the source's class folder (absolute), so the subset takes no space and the data loaders
follow the links; with ``--copy``, a copy of its files. This is the layout the ``imagenet-100``
recipes read (``data.train_path``/``data.val_path``).

Everything is checked before anything is written (one line, exit 2): the class list, the source,
its ``train/`` and ``val/``, every class in both, and what ``<dst>`` already holds. The command is
resumable: a class already in ``<dst>`` (a link to the same source folder, or a folder) is kept as
it is and the missing ones are added, so running it again after an interruption completes the
subset. A copy is made under ``<dst>/.partial/<split>/<class>`` and renamed into place when
complete; an interrupted one is found there and copied again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from solo_ext.utils.errors import DataError, first_problem

SHIPPED = {"imagenet100": "imagenet100_classes.txt"}
SPLITS = ("train", "val")
PARTIAL = ".partial"
_LISTED = 5


def shipped_classes(name: str) -> list[str]:
    """The class ids of a shipped list (``imagenet100``), in the file's order."""
    return files("solo_ext.data").joinpath(SHIPPED[name]).read_text().split()


def imagenet100_classes() -> list[str]:
    """The 100 WordNet ids of ImageNet-100, in the file's order."""
    return shipped_classes("imagenet100")


def read_classes(spec: str) -> list[str]:
    """The class folder names ``--classes`` stands for: a shipped list's name or a text file.

    Raises:
        DataError: one line naming ``--classes``: no such list or file, an empty list, a line that
            is no plain folder name, a class listed twice.
    """
    if spec in SHIPPED:
        return shipped_classes(spec)
    flag = f"--classes='{spec}'"
    path = Path(spec).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        allowed = f"must be {' or '.join(SHIPPED)} or a text file of class folder names, one a line"
        raise DataError(f"{flag}: {allowed} ({reason})") from None
    classes: list[str] = []
    lines: dict[str, int] = {}  # class name -> the line that names it
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in (".", "..") or "/" in name or os.sep in name or name.startswith("."):
            raise DataError(f"{flag}: line {number}, '{name}', is not a class folder name")
        if name in lines:
            raise DataError(f"{flag}: line {number} repeats '{name}' (line {lines[name]})")
        lines[name] = number
        classes.append(name)
    if not classes:
        raise DataError(f"{flag}: lists no class (one class folder name a line)")
    return classes


def _missing_text(split: str, missing: Sequence[str], total: int) -> str:
    shown = ", ".join(missing[:_LISTED]) + (", ..." if len(missing) > _LISTED else "")
    hint = " (ImageNet's val images must first be sorted into class folders)" if split == "val" else ""
    return f"{split}/ lacks {len(missing)} of the {total} class folders: {shown}{hint}"


def _done(entry: Path, source: Path) -> bool | None:
    """Whether ``entry`` holds its class already (True), is still to be made (False), or is in the
    way (None): a link elsewhere, a file, a broken link."""
    if entry.is_symlink():
        return True if entry.exists() and entry.resolve() == source.resolve() else None
    if entry.is_dir():
        return True
    return False if not entry.exists() else None


def plan_subset(
    classes: Sequence[str], src: str | os.PathLike, dst: str | os.PathLike
) -> tuple[Path, Path, list[tuple[Path, Path]]]:
    """Check everything and list what is left to make.

    Returns:
        ``(source, destination, todo)``: the absolute source and destination folders and the
        ``(source class folder, destination entry)`` pairs not yet in ``dst``.

    Raises:
        DataError: one line naming the flag, the folder and what is wrong: ``src`` or its
            ``train/``/``val/`` missing, a class folder missing (the first few named, with the
            count), ``dst`` not a folder, an entry of ``dst`` in the way of a class.
    """
    source, out = Path(src).expanduser().resolve(), Path(dst).expanduser().absolute()
    problem = first_problem(
        (
            (not source.is_dir(), f"--src='{src}': no such folder"),
            *(
                (
                    source.is_dir() and not (source / split).is_dir(),
                    f"--src='{src}': no {split}/ folder (expected {split}/<class>/ per class)",
                )
                for split in SPLITS
            ),
            (out.exists() and not out.is_dir(), f"--dst='{dst}': exists and is not a folder"),
            *(
                (
                    (out / split).exists() and not (out / split).is_dir(),
                    f"--dst='{dst}': {split} exists and is not a folder",
                )
                for split in SPLITS
            ),
        )
    )
    if problem is None:
        missing = {split: sorted(c for c in classes if not (source / split / c).is_dir()) for split in SPLITS}
        problem = first_problem(
            (bool(m), f"--src='{src}': {_missing_text(split, m, len(classes))}")
            for split, m in missing.items()
        )
    if problem is not None:
        raise DataError(problem)
    todo = []
    for split in SPLITS:
        for name in classes:
            pair = (source / split / name, out / split / name)
            done = _done(pair[1], pair[0])
            if done is None:
                raise DataError(
                    f"--dst='{dst}': {split}/{name} is in the way (a file, a broken link or a link to "
                    f"another folder than {pair[0]}); remove it or choose another --dst"
                )
            if not done:
                todo.append(pair)
    return source, out, todo


def make_subset(
    classes: Sequence[str], src: str | os.PathLike, dst: str | os.PathLike, copy: bool = False
) -> tuple[Path, int]:
    """Write ``dst/{train,val}/<class>`` for every class: a symlink to ``src/{train,val}/<class>``,
    or with ``copy`` a copy of its files; classes already there are kept.

    Returns:
        ``(dst, made)``: the absolute destination and how many class folders this call made (the
        rest were there already).

    Raises:
        DataError: see :func:`plan_subset`; nothing is written then.
    """
    _, out, todo = plan_subset(classes, src, dst)
    partial = out / PARTIAL
    for source, entry in todo:
        entry.parent.mkdir(parents=True, exist_ok=True)
        if not copy:
            # one system call: the link is there whole or not at all
            entry.symlink_to(source, target_is_directory=True)
            continue
        # copied under a name of its own beside dst's splits and renamed when complete (same file
        # system: the rename is atomic); a leftover of an interrupted copy is copied again
        tmp = partial / entry.parent.name / entry.name
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, tmp)
            os.replace(tmp, entry)
        except OSError as err:
            # what is complete stays; the partial copy is redone by the next run
            reason = err.strerror or type(err).__name__
            raise DataError(
                f"--dst='{dst}': copying {source} stopped ({reason}); fix it and run again"
            ) from err
    if partial.is_dir():
        for split in SPLITS:
            if (partial / split).is_dir() and not any((partial / split).iterdir()):
                (partial / split).rmdir()
        if not any(partial.iterdir()):
            partial.rmdir()
    return out, len(todo)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m solo_ext.data.subset", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--classes",
        required=True,
        help=f"{' or '.join(SHIPPED)} (a shipped list) or a text file of class folder names, one a line",
    )
    parser.add_argument("--src", required=True, help="the full dataset, with train/<class>/ and val/<class>/")
    parser.add_argument(
        "--dst", required=True, help="the subset's folder (new, or a partial one to complete)"
    )
    parser.add_argument(
        "--copy", action="store_true", help="copy the images instead of linking the class folders"
    )
    args = parser.parse_args(argv)
    try:
        classes = read_classes(args.classes)
        out, made = make_subset(classes, args.src, args.dst, copy=args.copy)
    except DataError as err:
        # solo_ext.run.exits' convention (one line, the error's exit code); data/ may not import run/
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    how = "copies of" if args.copy else "symlinks into"
    kept = len(SPLITS) * len(classes) - made
    print(
        f"{len(classes)} classes in {out}/train and {out}/val, {how} {args.src}: "
        f"{made} class folders made, {kept} already there"
    )


if __name__ == "__main__":
    main()
