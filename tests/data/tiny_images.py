"""Tiny images written with PIL for the data tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ant", "bee", "cat")
IMAGES_PER_CLASS = 4
# the bad images every reader must name in one line
FAULTS = ("corrupt", "bomb", "unreadable")
# what the line says besides the file (PIL's, the file system's words)
SAYS = {"corrupt": "cannot identify image file", "bomb": "decompression bomb", "unreadable": "No such file"}


def write_image(
    path: Path, value: int | None = None, size: tuple[int, int] = (40, 40), seed: int = 0
) -> Path:
    """A solid grey image of ``value`` (so labels can be read back from pixels), or random noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def class_value(class_index: int) -> int:
    """Grey level that encodes a class in the solid test images."""
    return 40 + 80 * class_index


def write_png_bomb(path: Path, side: int = 20_000) -> Path:
    """A valid 1-bit greyscale PNG of ``side`` x ``side`` pixels, all black: 4e8 pixels by
    default, more than twice PIL's ``MAX_IMAGE_PIXELS`` (a decompression bomb), in ~50 KB.
    Written chunk by chunk, since PIL would hold the pixels in memory to save it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (side + 7) // 8)  # filter type 0, then the row's bits
    packer = zlib.compressobj()
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def add_fault(folder: Path, fault: str) -> Path:
    """One bad image in ``folder``; returns its path."""
    bad = folder / f"{fault}.png"
    if fault == "corrupt":
        bad.write_bytes(b"this is not a png")
    elif fault == "bomb":
        write_png_bomb(bad)
    else:
        bad.symlink_to(folder / "moved-away.png")
    return bad
