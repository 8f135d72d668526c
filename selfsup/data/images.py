"""Image files to uint8 tensors, for every reader of image files (image folders, detection, segmentation), and
the lists of image ids that come with them.

PNGs are decoded by Pillow, everything else (JPEG, WebP, GIF) by torchvision. torchvision's PNG decoder (0.29)
kills the process with a segmentation fault on most PNGs whose pixel data is damaged: libpng's error handler
jumps back into the decoder, which then raises through C frames (measured: 64% of truncations and single-byte
flips of a small RGB PNG). A crash in a loader worker is no error a user can act on, and data.bad_images=skip
cannot skip it; Pillow raises an exception, which becomes a one-line error naming the file. The decoders are
chosen by the file's signature, not its name, so a PNG named .jpg is decoded safely too.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

from selfsup.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What Pillow raises on a damaged PNG: truncated data, broken chunks or zlib streams, absurd sizes.
PNG_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class UndecodableImage(Exception):
    """A file that holds no image this can decode; the message is the reason, in one line."""


def shown(path: object) -> str:
    """A path as text for a one-line message: characters that are not printable (a newline in a file name,
    bytes that are not UTF-8) written as escapes, the rest as they are."""
    text = str(path)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def read_image(path: str, rgb: bool = True) -> torch.Tensor:
    """The image of file `path` as uint8 [3, H, W] RGB, or (rgb=False) as stored: [C, H, W] with the indices of
    a palette PNG (int32 for a 16-bit grey PNG, uint8 otherwise). A 16-bit PNG as RGB is its high bytes (the
    decoder before gave uint16 tensors, which the uint8 pipelines read as values up to 65535). Raises
    UndecodableImage with the reason when the file is no readable image."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UndecodableImage(err.strerror or type(err).__name__) from None
    if not data:
        raise UndecodableImage("empty file")
    if data.startswith(PNG_SIGNATURE):
        return _decode_png(data, rgb)
    try:
        return decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.RGB if rgb else ImageReadMode.UNCHANGED,
        )
    except RuntimeError as err:
        # torchvision starts its messages with the C++ function and source line: keep the reason only.
        raise UndecodableImage(re.sub(r"^[^,]*, \S+:\d+, ", "", first_line(err))) from None


def first_line(err: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _decode_png(data: bytes, rgb: bool) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT:  # 16-bit grey: as an image its high byte; as stored (ids), all of it
                values = np.asarray(image, dtype=np.int64)
                pixels = (values >> 8).clip(0, 255).astype(np.uint8) if rgb else values.astype(np.int32)
            elif rgb:
                pixels = np.array(image.convert("RGB"))
            elif image.mode == "1":
                pixels = np.array(image.convert("L"))
            else:
                pixels = np.array(image)
    except UnidentifiedImageError:
        raise UndecodableImage("not a readable PNG: its header is damaged") from None
    except PNG_ERRORS as err:
        raise UndecodableImage(f"damaged or truncated PNG: {first_line(err)}") from None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[None], 3, axis=0) if rgb else pixels[None]
    else:
        pixels = pixels.transpose(2, 0, 1)
    return torch.from_numpy(pixels)


def read_text_list(path: Path) -> str:
    """The text of a list of image ids (ImageSets/*.txt); a damaged one, bytes that are not UTF-8, is refused
    in one line rather than with a UnicodeDecodeError."""
    data = path.read_bytes()
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise UserError(
            f"{shown(path)} is no text list of image ids (byte {data[err.start]:#04x} at offset {err.start} is not "
            "UTF-8): the file is damaged, restore it from the dataset's archive"
        ) from None
