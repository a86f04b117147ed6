"""ImageNet-100 from an ImageNet folder: solo-learn's 100-class subset, as symlinks.

    python -m solo_ext.data.imagenet100 --imagenet /data/imagenet --out /data/imagenet-100

ImageNet-100 is the 100 WordNet ids of ``imagenet100_classes.txt`` (solo-learn's
``solo/data/dataset_subset/imagenet100_classes.txt``, shipped here as package data), with
ImageNet-1k's train and val images of those classes. The command reads ImageNet in ImageFolder
layout (``<imagenet>/train/<wnid>/`` and ``<imagenet>/val/<wnid>/``: the val images sorted into
class folders) and writes ``<out>/train/<wnid>`` and ``<out>/val/<wnid>``, each a symlink to the
ImageNet class folder (absolute), so the subset takes no space; the data loaders follow links.
This is the layout the ``imagenet-100`` recipes read (``data.train_path``/``data.val_path``).

Everything is checked before anything is written (one line, exit 2): the ImageNet folder, its
``train/`` and ``val/``, every class in both, ``--out`` new or empty. The subset is built in a
temporary folder beside ``--out`` and renamed when complete, so ``--out`` is whole or absent.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from solo_ext.utils.errors import DataError, first_problem

CLASSES_FILE = "imagenet100_classes.txt"
SPLITS = ("train", "val")
_LISTED = 5


def imagenet100_classes() -> list[str]:
    """The 100 WordNet ids of ImageNet-100, in the file's order."""
    return files("solo_ext.data").joinpath(CLASSES_FILE).read_text().split()


def _missing_text(split: str, missing: Sequence[str], total: int) -> str:
    shown = ", ".join(missing[:_LISTED]) + (", ..." if len(missing) > _LISTED else "")
    hint = " (ImageNet's val images must first be sorted into class folders)" if split == "val" else ""
    return f"{split}/ lacks {len(missing)} of the {total} class folders: {shown}{hint}"


def make_imagenet100(
    imagenet: str | os.PathLike, out: str | os.PathLike, classes: Sequence[str] = ()
) -> Path:
    """Write ``out/{train,val}/<wnid>`` as symlinks to ``imagenet/{train,val}/<wnid>``.

    Args:
        imagenet: ImageNet in ImageFolder layout (``train/<wnid>/``, ``val/<wnid>/``).
        out: a new (or empty) folder.
        classes: the WordNet ids; empty means ImageNet-100's.

    Returns:
        ``out``.

    Raises:
        DataError: one line naming the flag, the folder and what is wrong: ``imagenet`` or its
            ``train/``/``val/`` missing, a class folder missing (the first few named, with the
            count), ``out`` not empty. Nothing is written then.
    """
    classes = list(classes) or imagenet100_classes()
    source, out = Path(imagenet).expanduser().resolve(), Path(out).expanduser().absolute()
    problem = first_problem(
        (
            (not source.is_dir(), f"--imagenet='{imagenet}': no such folder"),
            *(
                (
                    source.is_dir() and not (source / split).is_dir(),
                    f"--imagenet='{imagenet}': no {split}/ folder (expected {split}/<wnid>/ per class)",
                )
                for split in SPLITS
            ),
            (
                out.exists() and (not out.is_dir() or any(out.iterdir())),
                f"--out='{out}': exists and is not an empty folder; choose a new one",
            ),
        )
    )
    if problem is None:
        missing = {split: sorted(c for c in classes if not (source / split / c).is_dir()) for split in SPLITS}
        problem = first_problem(
            (bool(m), f"--imagenet='{imagenet}': {_missing_text(split, m, len(classes))}")
            for split, m in missing.items()
        )
    if problem is not None:
        raise DataError(problem)

    out.parent.mkdir(parents=True, exist_ok=True)
    # a name of our own beside out (same file system: the rename is atomic); mkdir is exclusive,
    # so nothing of the user's is reused, and it takes its mode from the umask
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        for split in SPLITS:
            (tmp / split).mkdir()
            for wnid in classes:
                (tmp / split / wnid).symlink_to(source / split / wnid, target_is_directory=True)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        # removes the links, never what they point to
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m solo_ext.data.imagenet100", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--imagenet", required=True, help="ImageNet with train/<wnid>/ and val/<wnid>/")
    parser.add_argument("--out", required=True, help="a new folder for ImageNet-100")
    args = parser.parse_args(argv)
    try:
        out = make_imagenet100(args.imagenet, args.out)
    except DataError as err:
        # solo_ext.run.exits' convention (one line, the error's exit code); data/ may not import run/
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    n = len(imagenet100_classes())
    print(f"ImageNet-100 in {out}: train/ and val/, {n} class folders each, symlinks into {args.imagenet}")


if __name__ == "__main__":
    main()
