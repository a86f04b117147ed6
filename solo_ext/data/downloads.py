"""torchvision's CIFAR-10/100 and STL-10, with a download that cannot hang or leave half files."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100, STL10
from torchvision.datasets.utils import check_integrity

from solo_ext.utils.errors import DataError

TORCHVISION_DATASETS = {"cifar10": CIFAR10, "cifar100": CIFAR100, "stl10": STL10}
# torchvision's arguments for each split of each dataset
_CIFAR_SPLITS = {"train": {"train": True}, "test": {"train": False}}
SPLITS = {
    "cifar10": _CIFAR_SPLITS,
    "cifar100": _CIFAR_SPLITS,
    "stl10": {split: {"split": split} for split in STL10.splits},
}

# Seconds a stalled connect or read may block before the download gives up. Name resolution is
# not covered by socket timeouts, but fails at once on a machine without network.
DOWNLOAD_TIMEOUT_S = 20.0


def _remove_leftovers(cls: type[Any], root: Path, existed: dict[str, bool], root_existed: bool) -> None:
    """Delete what a failed download left: a partial archive and a partly extracted folder."""
    archive = root / cls.filename
    if archive.is_file() and not check_integrity(str(archive), cls.tgz_md5):
        archive.unlink()
    extracted = root / cls.base_folder
    if extracted.exists() and not existed["extracted"]:
        shutil.rmtree(extracted, ignore_errors=True)
    if not root_existed and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def torchvision_dataset(
    dataset: str,
    root: str,
    split: str,
    transform: Callable | None,
    download: bool,
    key: str = "data.train_path",
) -> Dataset:
    """Load ``split`` of a torchvision dataset from ``root``, downloading it there if allowed.

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``stl10``.
        split: ``train``/``test`` (CIFAR), or any STL-10 split (``train+unlabeled``, ``train``,
            ``test``, ``unlabeled``): a key of :data:`SPLITS` (KeyError otherwise).
        download: fetch the archive when the files are not in ``root``. The download runs with a
            socket timeout of ``DOWNLOAD_TIMEOUT_S`` (restored afterwards); on any failure, or an
            interrupt, the partial archive and any partly extracted folder are removed.
        key: config key named in error messages.

    Returns:
        The torchvision dataset; items ``(transform(PIL image), target)``, target -1 for STL-10's
        unlabelled images.

    Raises:
        DataError: the files are missing and ``download`` is off, or the download failed
            (chained to torchvision's error). An interrupt is not caught, but cleans up too.
    """
    cls, kwargs = TORCHVISION_DATASETS[dataset], SPLITS[dataset][split]
    cause: Exception  # the error the DataError below is chained to
    try:
        return cls(root, transform=transform, download=False, **kwargs)
    except RuntimeError as exc:
        reason, cause = f"{dataset} is not in '{root}' (or is corrupted) and downloading is off", exc
    if download:
        root_path = Path(root)
        root_existed = root_path.is_dir()
        existed = {"extracted": (root_path / cls.base_folder).exists()}
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        done = False
        try:
            ds = cls(root, transform=transform, download=True, **kwargs)
            done = True
            return ds
        except Exception as exc:
            reason, cause = f"could not download {dataset} into '{root}' (no network?)", exc
        finally:
            if not done:  # an error or an interrupt
                _remove_leftovers(cls, root_path, existed, root_existed)
            socket.setdefaulttimeout(previous_timeout)
    raise DataError(f"{reason}: place the dataset there or set {key}") from cause
