"""Reading images and masks from paths, PIL images or arrays, with one clear error per bad input.

Images come back as ``(H, W, 3) uint8`` RGB arrays; masks as ``(H, W) bool`` arrays. Grayscale, palette,
RGBA (alpha dropped), CMYK and 16-bit images are converted; 16-bit data is scaled to 8 bit.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
MaskLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def describe(source: object) -> str:
    """A short name for an input, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array of shape {source.shape} and dtype {source.dtype}"
    if isinstance(source, Image.Image):
        return f"PIL image ({source.mode}, {source.size[0]}x{source.size[1]})"
    return type(source).__name__


#: The largest image (in pixels) read from a file: 250 MP. PIL's own guard (a warning above 89.5 MP, an error
#: above 179 MP) is replaced by this one, so 100+ MP photos load; a larger image is refused with an
#: InputError saying its size. Raise it (``no_time_to_train.imageio.MAX_IMAGE_PIXELS = ...``) for bigger ones:
#: predictions hold ``detections x pixels`` bytes of masks (see ``ReferenceSegmenter.merge``).
MAX_IMAGE_PIXELS = 250_000_000
_PIL_GUARD = threading.Lock()


def open_image(path: str | os.PathLike, what: str = "image", load: bool = True) -> Image.Image:
    """Open an image file with PIL (decoded unless ``load=False``), refusing missing, undecodable and too
    large files (above :data:`MAX_IMAGE_PIXELS`) with one InputError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {p} not found: check the path")
    try:
        with _PIL_GUARD:  # PIL's limit is process-wide: lift it only while this header is read
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                img = Image.open(p)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        w, h = img.size
        if w * h > MAX_IMAGE_PIXELS:
            img.close()
            raise InputError(f"{what} {p} is {w}x{h} = {w * h:,} pixels, above the limit of {MAX_IMAGE_PIXELS:,} "
                             f"(no_time_to_train.imageio.MAX_IMAGE_PIXELS); downscale it, or raise the limit if "
                             f"the machine has the memory")
        if load:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{what} {p} could not be decoded ({exc}); is it a valid image file?") from exc
    return img


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(f"image {name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image {name}: the image is empty")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = np.round(arr.astype(np.float64) / 65535.0 * 255.0).astype(np.uint8)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(f"image {name}: contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        out = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    else:
        out = np.clip(arr, 0, 255).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = out[..., :3]
    return np.ascontiguousarray(out)


def load_image(source: ImageLike) -> np.ndarray:
    """Return ``source`` as an ``(H, W, 3) uint8`` RGB array.

    ``source``: a file path, a PIL image, or an array (HxW, HxWx1/3/4; uint8, uint16, bool, or float in
    [0, 1] or [0, 255]).
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return _pil_to_rgb(open_image(source, "image"))
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name)
    raise InputError(f"image: unsupported type {name}; pass a path, a PIL image or an HxWx3 uint8 array")


def load_mask(source: MaskLike, shape: tuple[int, int] | None = None, *, name: str = "mask") -> np.ndarray:
    """Return ``source`` as an ``(H, W) bool`` mask (non-zero = foreground).

    ``shape``: the ``(H, W)`` of the image the mask belongs to; a mismatch is an error, not a resize.
    A file is read as grayscale (any non-zero pixel is foreground; an RGBA file uses its alpha channel).
    """
    label = f"{name} {describe(source)}"
    if isinstance(source, (str, os.PathLike)):
        img = open_image(source, name)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            arr = np.asarray(img.convert("RGBA"))[..., 3] > 0
        else:
            arr = np.asarray(img) != 0
            if arr.ndim == 3:
                arr = arr.any(axis=2)
    elif isinstance(source, Image.Image):
        arr = np.asarray(source) != 0
        if arr.ndim == 3:
            arr = arr.any(axis=2)
    elif isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise InputError(f"{label}: expected an HxW array")
        arr = arr != 0 if arr.dtype != np.bool_ else arr
    else:
        raise InputError(f"{label}: unsupported type; pass an HxW bool array or a path to a mask image")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputError(
            f"{label}: size {arr.shape[1]}x{arr.shape[0]} (WxH) does not match the image's "
            f"{shape[1]}x{shape[0]}; masks must be at the image's full resolution"
        )
    if not arr.any():
        raise InputError(f"{label}: the mask is empty (no foreground pixel); give at least one pixel of the object")
    return np.ascontiguousarray(arr, dtype=bool)
