"""Decoding image files into uint8 tensors (the tensor back-end's reader)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2

from solo_ext.utils.errors import DataError

# what PIL calls a JPEG file (MPO: a camera's JPEG with more pictures after the first)
JPEG_FORMATS = ("JPEG", "MPO")


@contextmanager
def decoding(name: str | os.PathLike | None) -> Iterator[None]:
    """Read or decode the image ``name`` inside the block: whatever the file system, PIL or
    torchvision's JPEG decoder raise about it becomes one ``DataError`` naming the file.

    The file system reports OSError; PIL reports unreadable, truncated and unknown formats as
    OSError (UnidentifiedImageError included), a few decoders as SyntaxError or ValueError, an
    image of more than twice ``Image.MAX_IMAGE_PIXELS`` pixels as DecompressionBombError (before
    decoding it); ``decode_jpeg`` reports corrupt data as RuntimeError. (DataError is a
    RuntimeError too: do not nest these blocks.)
    """
    try:
        yield
    except (OSError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image '{name}': {exc}") from exc


def read_bytes(path: str | os.PathLike) -> bytes:
    """The encoded file; DataError naming it when it cannot be read."""
    with decoding(path), open(path, "rb") as f:
        return f.read()


def decode_rgb_tensor(source: str | os.PathLike | bytes, name: str | os.PathLike | None = None):
    """Decode one image (a path, or its encoded bytes) into a uint8 RGB tensor (3, H, W).

    JPEG goes through ``torchvision.io.decode_jpeg``; PNG, BMP, WebP, ... through PIL. PIL reads
    every file's header first, which refuses an image of more than twice ``Image.MAX_IMAGE_PIXELS``
    pixels (a decompression bomb) before any decoder allocates it, JPEG included.

    Raises:
        DataError: ``cannot decode image '<file>': ...`` (``name`` names the file for bytes).
    """
    data = read_bytes(source) if not isinstance(source, bytes) else source
    shown = source if name is None else name
    with decoding(shown), Image.open(io.BytesIO(data)) as img:  # type: ignore[arg-type]  # bytes come with a name
        if img.format in JPEG_FORMATS:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(buffer, mode=ImageReadMode.RGB)
        return v2.functional.pil_to_tensor(img.convert("RGB"))
