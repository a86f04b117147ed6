"""Images on disk: class-per-folder (ImageFolder), flat unlabelled folders, Tiny-ImageNet's layout.

Every reader returns an :class:`ImageSamples`, whose items are ``(transform(image), target)``.
Images are decoded lazily from their paths (``image_folder``) or, after
:meth:`ImageSamples.load_into_memory`, held in memory (``ram_image_folder``); both give identical
items. ``decode="pil"`` hands the transform an RGB PIL image; ``decode="tensor"`` a uint8 tensor
(3, H, W) (:func:`~solo_ext.data.decode.decode_rgb_tensor`: torchvision's JPEG decoder,
PIL for other formats), for the ``transforms.v2`` pipelines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, cast

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from solo_ext.data.decode import decode_rgb_tensor, decoding, read_bytes
from solo_ext.utils.errors import DataError, first_problem

IMAGE_EXTENSIONS = tuple(IMG_EXTENSIONS)

CLASS_FOLDER_LAYOUT = "ImageFolder layout <root>/<class>/<image>"
FLAT_LAYOUT = "a folder of images <root>/<image> (sub-folders are searched too)"
TINY_TRAIN_LAYOUT = "tiny-imagenet layout <root>/<wnid>/images/<image>"
TINY_VAL_LAYOUT = (
    "tiny-imagenet layout <root>/images/<image> with <root>/val_annotations.txt, or <root>/<wnid>/<image>"
)
TINY_ANNOTATIONS = "val_annotations.txt"


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode one image file into an RGB PIL image; DataError naming the file if it cannot be read."""
    with decoding(path), Image.open(path) as img:
        return img.convert("RGB")


class ImageSamples(Dataset):
    """Images with integer targets; item ``i`` is ``(transform(image_i), target_i)``.

    Args:
        images: per sample either a path (decoded with :func:`load_rgb` on access) or an already
            decoded RGB PIL image.
        targets: class index per sample, -1 for unlabelled samples; as many as ``images``
            (ValueError otherwise).
        classes: class names, ``classes[t]`` is the name of target ``t``.
        transform: applied to the decoded image; None returns the image itself.
        decode: ``"pil"`` (RGB PIL image) or ``"tensor"`` (uint8 tensor (3, H, W)), what the
            transform receives.
    """

    def __init__(
        self,
        images: Sequence[Path | Image.Image],
        targets: Sequence[int],
        classes: Sequence[str] = (),
        transform: Callable | None = None,
        decode: Literal["pil", "tensor"] = "pil",
    ) -> None:
        self.images = list(images)
        # strict: a target missing or left over is a ValueError, not a shifted label
        self.targets = [int(t) for _, t in zip(self.images, targets, strict=True)]
        self.classes = list(classes)
        self.transform = transform
        self.decode = decode
        # ram_image_folder with decode="tensor": the encoded files, decoded on every access
        self.encoded: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> ImageSamples:
        """A new dataset of the samples at ``indices`` (same classes and transform)."""
        out = ImageSamples(
            [self.images[i] for i in indices],
            [self.targets[i] for i in indices],
            self.classes,
            self.transform,
            self.decode,
        )
        if self.encoded is not None:
            out.encoded = [self.encoded[i] for i in indices]
        return out

    def load_into_memory(self) -> None:
        """``ram_image_folder``: items stay identical, file reads stop. With ``decode="pil"`` every
        image is decoded once, now; with ``decode="tensor"`` the encoded files are kept (a JPEG is
        ~10x smaller than its pixels) and decoded on every access, which the JPEG decoder does
        faster than PIL converts a held image."""
        if self.decode == "tensor":
            # not loaded yet: the images are their files
            self.encoded = [read_bytes(cast(Path, p)) for p in self.images]
        else:
            self.images = [img if isinstance(img, Image.Image) else load_rgb(img) for img in self.images]

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.decode == "tensor" and not isinstance(image, Image.Image):
            source = self.encoded[index] if self.encoded is not None else image
            image = decode_rgb_tensor(source, name=image)
        elif not isinstance(image, Image.Image):
            image = load_rgb(image)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _refuse(root: str | os.PathLike | None, key: str, problems: Iterable[tuple[object, str]]) -> None:
    """The one error of the folder readers: ``DataError("<key>=<root>: <message>")`` for the
    first of ``problems`` that holds (see :func:`first_problem`)."""
    problem = first_problem(problems)
    if problem is not None:
        shown = None if root is None else str(root)
        raise DataError(f"{key}={shown!r}: {problem}")


def _list(folder: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """One listing of ``folder``, sorted by name, hidden entries (.ipynb_checkpoints, .cache, ...)
    left out; DataError naming the folder when it cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list folder '{folder}': {exc.strerror or exc}") from exc


def _with_parents(real: str) -> list[str]:
    """``real`` and every folder above it, up to the file system's root."""
    chain = [real]
    while (parent := os.path.dirname(chain[-1])) != chain[-1]:
        chain.append(parent)
    return chain


class _ImageWalk:
    """Image files below the class folders of one root, links followed, each real file once.

    Real paths decide what is taken (they are looked up only for links: a plain entry's real path
    is its folder's plus its name). A folder is entered at most once (a link back to a folder
    already walked, e.g. ``train/a/loop -> ..``, is cut), never one that holds a class folder or
    ``top`` (that would pull the other classes in) and never one inside another class folder; a
    file is taken once, and a link to a file inside another class folder is left to that class.
    So labels never cross classes and a cycle cannot repeat images.

    Args:
        top: the folder above the class folders (the dataset root).
        class_dirs: ``{class name: its folder}``; a flat folder is one class, ``top`` itself.
    """

    def __init__(self, top: Path, class_dirs: dict[str, Path]) -> None:
        self.class_dirs = class_dirs
        self.class_of = {os.path.realpath(d): name for name, d in class_dirs.items()}
        # entering any of these would reach a class folder (or the root) again
        self.holders = {a for real in (os.path.realpath(top), *self.class_of) for a in _with_parents(real)}
        self.entered: set[str] = set()
        self.taken: set[str] = set()
        self.skipped: list[tuple[Path, str]] = []  # (link, where it leads) of the links cut

    def _owner(self, real: str) -> str | None:
        """The class whose folder holds ``real`` (the nearest), None for a path outside them."""
        return next((self.class_of[a] for a in _with_parents(real) if a in self.class_of), None)

    def images(self, name: str) -> list[Path]:
        """The image files of class ``name``, in a stable order: a folder's files (sorted), then
        its sub-folders', depth first."""
        top = self.class_dirs[name]
        real_top = os.path.realpath(top)
        self.entered.add(real_top)
        found: list[Path] = []
        pending = [(top, real_top)]
        while pending:
            folder, real_folder = pending.pop()
            subfolders = []
            for entry in _list(folder):
                path = Path(entry.path)
                link = entry.is_symlink()
                real = os.path.realpath(path) if link else os.path.join(real_folder, entry.name)
                # a link to another class's folder or file is left to that class; one to a path
                # outside every class folder is followed (a dangling link is kept as a file:
                # reading it names the file)
                elsewhere = link and self._owner(real) not in (name, None)
                if entry.is_dir():
                    if real in self.entered or real in self.holders or elsewhere:
                        self.skipped.append((path, real))
                    else:
                        self.entered.add(real)
                        subfolders.append((path, real))
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    if elsewhere:
                        self.skipped.append((path, real))
                    elif real not in self.taken:
                        self.taken.add(real)
                        found.append(path)
            pending.extend(reversed(subfolders))
        return found

    def warn_skipped(self, key: str) -> None:
        """One warning line for the links that were cut, naming the first."""
        if self.skipped:
            link, real = self.skipped[0]
            print(
                f"WARNING: {key}: {len(self.skipped)} link(s) not followed (to a folder already walked, one "
                f"holding the class folders, or into another class), e.g. '{link}' -> '{real}'",
                file=sys.stderr,
            )


def _images_under(folder: Path, key: str) -> list[Path]:
    """Image files anywhere below ``folder``, in a stable (sorted) order; see :class:`_ImageWalk`."""
    walk = _ImageWalk(folder, {"": folder})
    found = walk.images("") if folder.is_dir() else []
    walk.warn_skipped(key)
    return found


def _class_folder_layout(dataset: str) -> str:
    return TINY_TRAIN_LAYOUT if dataset == "tiny-imagenet" else CLASS_FOLDER_LAYOUT


def find_classes(
    root: str | os.PathLike | None, key: str, dataset: str, layout: str | None = None
) -> list[str]:
    """Sorted names of the class folders of ``root``.

    Raises:
        DataError: ``root`` is None (the dataset has no default folder for ``key``), missing or
            has no (non-hidden) sub-folders; the message names ``key`` and the expected layout.
    """
    layout = layout or _class_folder_layout(dataset)
    exists = root is not None and Path(root).is_dir()
    classes = [e.name for e in _list(cast(str | os.PathLike[str], root)) if e.is_dir()] if exists else []
    hint = "; for a flat folder of unlabelled images set data.no_labels=True" if dataset == "custom" else ""
    what = key.removeprefix("data.").removesuffix("_path")
    _refuse(
        root,
        key,
        (
            (root is None, f"dataset {dataset} has no default {what} folder; set {key}"),
            (not exists, f"no such folder (dataset {dataset} expects {layout})"),
            (not classes, f"no class folders (dataset {dataset} expects {layout}){hint}"),
        ),
    )
    return classes


class FolderListings:
    """The class-per-folder trees one run has listed, each walked once (one listing per folder):
    every dataset the run builds from the same folder (the pretraining set, the clean kNN bank,
    the classes a val folder is labelled with) shares its file list. Keyed by the folder's real
    path; pass one instance to the dataset builders of a run, and a new one to the next run."""

    def __init__(self) -> None:
        self._classes: dict[str | None, list[str]] = {}  # None: find_classes refuses it
        self._images: dict[str, dict[str, list[Path]]] = {}

    def classes(
        self, root: str | os.PathLike | None, key: str, dataset: str, layout: str | None = None
    ) -> list[str]:
        """:func:`find_classes` of ``root``, listed once."""
        real = None if root is None else os.path.realpath(root)
        if real not in self._classes:
            self._classes[real] = find_classes(root, key, dataset, layout)
        return self._classes[real]

    def images(
        self, root: str | os.PathLike | None, key: str, dataset: str, layout: str | None = None
    ) -> dict[str, list[Path]]:
        """``{class: its image files}`` of ``root``'s class folders (:class:`_ImageWalk`), walked once."""
        classes = self.classes(root, key, dataset, layout)
        assert root is not None  # refused by find_classes
        real = os.path.realpath(root)
        if real not in self._images:
            walk = _ImageWalk(Path(root), {name: Path(root) / name for name in classes})
            self._images[real] = {name: walk.images(name) for name in classes}
            walk.warn_skipped(key)
        return self._images[real]


def class_folder_dataset(
    root: str | os.PathLike | None,
    key: str,
    dataset: str,
    transform: Callable | None = None,
    classes: Sequence[str] | None = None,
    layout: str | None = None,
    listings: FolderListings | None = None,
) -> ImageSamples:
    """ImageFolder-style dataset: every image below ``<root>/<class>/`` gets that class.

    Links (to files and to folders) are followed, each real file is taken once and labels never
    cross classes (:class:`_ImageWalk`).

    Args:
        classes: the class list to index into (a val folder uses the train folder's classes, so
            that a missing class cannot shift the labels); None takes ``root``'s own folders.
        listings: the run's folder listings, shared with its other datasets; None lists ``root``
            for this dataset alone.

    Raises:
        DataError: missing folder, no class folders, a class folder that is not in ``classes``,
            an empty class folder, a folder that cannot be listed.
    """
    layout = layout or _class_folder_layout(dataset)
    found = (listings or FolderListings()).images(root, key, dataset, layout)
    classes = list(found if classes is None else classes)
    unknown = sorted(set(found) - set(classes))
    empty = next((name for name, images in found.items() if not images), None)
    _refuse(
        root,
        key,
        (
            (
                unknown,
                f"class folder(s) {', '.join(unknown[:3])} are not among the {len(classes)} classes "
                "of data.train_path",
            ),
            (empty, f"class folder {empty!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})"),
        ),
    )
    paths = [path for images in found.values() for path in images]
    index = {name: i for i, name in enumerate(classes)}
    targets = [index[name] for name, images in found.items() for _ in images]
    return ImageSamples(paths, targets, classes, transform)


def flat_folder_dataset(
    root: str | os.PathLike,
    key: str,
    dataset: str,
    transform: Callable | None = None,
) -> ImageSamples:
    """Unlabelled images anywhere below ``root``; every target is -1.

    Raises:
        DataError: missing folder, or no image in it.
    """
    paths = _images_under(Path(root), key)  # nothing in a missing folder
    _refuse(
        root,
        key,
        (
            (not Path(root).is_dir(), f"no such folder (dataset {dataset} expects {FLAT_LAYOUT})"),
            (
                not paths,
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) (dataset {dataset} with no_labels expects "
                f"{FLAT_LAYOUT})",
            ),
        ),
    )
    return ImageSamples(paths, [-1] * len(paths), (), transform)


def tiny_imagenet_val_dataset(
    root: str | os.PathLike,
    key: str,
    classes: Sequence[str],
    transform: Callable | None = None,
) -> ImageSamples:
    """Tiny-ImageNet's val split, in its native layout or already sorted into class folders.

    Native layout: ``<root>/images/*.JPEG`` and ``<root>/val_annotations.txt`` whose tab-separated
    lines are ``filename, wnid, x0, y0, x1, y1``. Labels index into ``classes`` (the sorted
    wnids of the train folder). Without the annotation file (a missing ``root`` included),
    ``root`` must hold one folder per wnid.

    Raises:
        DataError: as :func:`class_folder_dataset`; or the first annotation line that is not
            tab-separated, names an unknown wnid or a missing image; or no line at all.
    """
    path = Path(root)
    annotations = path / TINY_ANNOTATIONS
    if not annotations.is_file():
        return class_folder_dataset(root, key, "tiny-imagenet", transform, classes, TINY_VAL_LAYOUT)
    class_index = {name: i for i, name in enumerate(classes)}
    paths, targets, problems = [], [], []
    for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        filename, wnid, *_ = [field.strip() for field in line.split("\t")] + [""]
        image_path = path / "images" / filename
        where = f"{TINY_ANNOTATIONS} line {line_no}"
        problems += [
            ("\t" not in line, f"{where}: expected '<filename>\\t<wnid>\\t...', got {line!r}"),
            (wnid not in class_index, f"{where}: {wnid!r} is not a class folder of data.train_path"),
            (not image_path.is_file(), f"{where}: image '{image_path}' does not exist"),
        ]
        paths.append(image_path)
        targets.append(class_index.get(wnid, -1))
    _refuse(root, key, [*problems, (not paths, f"{TINY_ANNOTATIONS} lists no images")])
    return ImageSamples(paths, targets, classes, transform)
