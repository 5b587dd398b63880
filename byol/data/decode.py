"""Image files as uint8 (3, H, W) RGB tensors, whatever their mode (16-bit, float, palette
with transparency), and which files a folder holds.

Folders met in the wild hold files that cannot be read: truncated downloads, zero-byte files, a
web page saved as .jpg, a decompression bomb. Each raises ``UnreadableImage`` naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2.functional import pil_to_tensor

from byol.errors import DatasetError

ORIENTATION = 0x0112  # the EXIF tag

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Beyond this a folder stays lazy (decoded per item) even when in_memory=True.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
STATS_SAMPLE = 1000
LOGGED_UNREADABLE = 5  # unreadable files named in the log; the rest are counted

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


class UnreadableImage(DatasetError):
    """One file that does not decode as an image."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"Cannot decode image {path}: {reason}")
        self.path, self.reason = path, reason


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_images(folder: Path) -> list[Path]:
    """The image files under ``folder``, sorted (``folder_index.walk``: linked folders followed
    once each, hidden ones skipped, regular files and broken links only)."""
    from byol.data.folder_index import walk  # it names image files by IMAGE_EXTENSIONS above

    return [Path(path) for path in walk(folder)[0]]


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # PIL's convert("RGB") clips 16-bit values at 255 instead of rescaling them.
        arr = np.asarray(img).astype(np.int64)
        arr = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
        arr = np.nan_to_num(np.clip(arr * scale, 0, 255)).round().astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids PIL's warning about palette transparency.
        img = img.convert("RGBA")
    return img.convert("RGB")


def failure_reason(error: Exception) -> str:
    return str(error) or type(error).__name__


def _decode(path: Path, source: Path | BinaryIO | None = None) -> torch.Tensor:
    try:
        with Image.open(path if source is None else source) as img:
            img.load()
            rgb = to_rgb(ImageOps.exif_transpose(img))  # as a camera's viewer shows it
    # PIL's format plugins raise many types on malformed input (OSError, SyntaxError,
    # struct.error, IndexError, DecompressionBombError...): any of them means "unreadable".
    except Exception as e:
        reason = failure_reason(e)
        if source is not None:  # PIL names the buffer by its repr: say what it holds instead
            reason = reason.replace(repr(source), "of its bytes")
        raise UnreadableImage(path, reason) from e
    return pil_to_tensor(rgb)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header alone; raises UnreadableImage."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            # EXIF orientations 5-8 turn the picture a quarter: the decoded size is swapped.
            turned = img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
            return (height, width) if turned else (width, height)
    except Exception as e:  # see _decode
        raise UnreadableImage(path, failure_reason(e)) from e


def decode_image(path: str | Path) -> torch.Tensor:
    """Decode an image file of any PIL mode to a uint8 (3, H, W) RGB tensor."""
    return _decode(Path(path))


def decode_bytes(data: bytes, name: str) -> torch.Tensor:
    """As ``decode_image``, for an image file's bytes (a tar shard's member, a dataset's cell);
    ``name`` says where they came from in an ``UnreadableImage``."""
    return _decode(Path(name), io.BytesIO(data))
