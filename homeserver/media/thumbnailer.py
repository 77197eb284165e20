"""Thumbnails with Pillow: size selection (pure) and rendering (blocking, run on a thread).

The spec (content_repo.md "Thumbnails") asks for "crop" (exactly the
configured box, centre-cropped) and "scale" (fit inside the box, aspect kept),
never upscaled, and the original when it is already no larger than asked.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from PIL import Image

# Pillow (about 2 MB resident) is imported by the functions that decode images,
# on the thread that renders the first thumbnail, not when the server starts.

#: Content types we try to decode. Anything else: 400 "Cannot generate thumbnails".
THUMBNAILABLE = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/apng", "image/gif", "image/webp",
    "image/bmp", "image/x-ms-bmp", "image/tiff",
})
#: Types an animated thumbnail may be served as (the original itself, when it is animated).
ANIMATABLE = frozenset({"image/gif", "image/webp", "image/apng", "image/png"})


class ThumbnailError(Exception):
    """The content cannot be thumbnailed (not an image, or undecodable)."""


class ImageTooLarge(Exception):
    """More pixels than ``max_image_pixels``: never decoded."""


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    animated: bool


@dataclass(frozen=True)
class Rendered:
    data: bytes
    content_type: str
    width: int
    height: int


def choose_size(sizes: tuple[tuple[int, int, str], ...], width: int, height: int,
                method: str) -> tuple[int, int, str]:
    """The configured size to render for a request of ``width`` x ``height``.

    The smallest size of the requested method that is at least as large as
    asked; failing that the smallest of any method that is (never return less
    than asked when a configured size can do better); failing that the
    largest of the requested method.
    """
    same = [s for s in sizes if s[2] == method] or list(sizes)

    def area(s: tuple[int, int, str]) -> tuple[int, int]:
        return (s[0] * s[1], s[0])

    for pool in (same, list(sizes)):
        big_enough = [s for s in pool if s[0] >= width and s[1] >= height]
        if big_enough:
            return min(big_enough, key=area)
    return max(same, key=area)


def base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _open(f: BinaryIO, max_pixels: int) -> Image.Image:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(f)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge() from None
    except Exception as e:  # Pillow raises many types for bad input
        raise ThumbnailError(str(e)) from None
    if img.width * img.height > max_pixels:
        raise ImageTooLarge()
    return img


def probe(f: BinaryIO, max_pixels: int) -> Probe:
    """Dimensions after EXIF rotation, and whether it has several frames."""
    img = _open(f, max_pixels)
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        w, h = h, w
    return Probe(w, h, bool(getattr(img, "is_animated", False)))


def render(f: BinaryIO, content_type: str, width: int, height: int, method: str,
           max_pixels: int) -> Rendered:
    """Make a ``method`` thumbnail for the box ``width`` x ``height`` from the first frame.

    Raises:
        ThumbnailError: not decodable.
        ImageTooLarge: over ``max_pixels``.
    """
    from PIL import Image, ImageOps

    img = _open(f, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            img = _resize(img, width, height, method)
            return _encode(img, base_type(content_type))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge() from None
    except (ImageTooLarge, ThumbnailError):
        raise
    except Exception as e:
        raise ThumbnailError(str(e)) from None


def _resize(img: Image.Image, box_w: int, box_h: int, method: str) -> Image.Image:
    from PIL import Image

    w, h = img.size
    if method == "scale":
        ratio = min(box_w / w, box_h / h, 1.0)  # never upscale
        size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
        return img.resize(size, Image.Resampling.LANCZOS) if size != img.size else img
    # crop: cover the box, then cut its centre. Without upscaling, the crop
    # keeps the box's aspect ratio at the largest size the image allows.
    ratio = max(box_w / w, box_h / h)
    if ratio < 1.0:
        img = img.resize((max(box_w, round(w * ratio)), max(box_h, round(h * ratio))),
                         Image.Resampling.LANCZOS)
        target_w, target_h = box_w, box_h
    else:
        scale = min(w / box_w, h / box_h)
        target_w, target_h = max(1, round(box_w * scale)), max(1, round(box_h * scale))
    w, h = img.size
    left, top = (w - target_w) // 2, (h - target_h) // 2
    return img.crop((left, top, left + target_w, top + target_h))


def _encode(img: Image.Image, source_type: str) -> Rendered:
    out = io.BytesIO()
    if source_type in ("image/jpeg", "image/jpg", "image/pjpeg"):
        img.convert("RGB").save(out, "JPEG", quality=80)
        content_type = "image/jpeg"
    else:
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA")
        img.save(out, "PNG")
        content_type = "image/png"
    return Rendered(out.getvalue(), content_type, img.width, img.height)
