"""Safe decoding of untrusted image uploads into a plain RGB picture.

Every upload is hostile until proven otherwise. `load_image` checks, in this order and each before the
next costs anything: the byte count; the format, sniffed from the first bytes (never the file name or
MIME type) against an allowlist; the width and height from the header, before a single pixel is
decoded (a 100 kB PNG can claim 100000×100000 pixels); then it decodes the first frame, converts it to
RGB and applies the EXIF orientation. Anything wrong becomes an `ImageError` whose `.key` the UI
translates; no other exception escapes for bad bytes.

Pixel limits are local arguments, not process-wide state. Pillow's own guard reads the global
`Image.MAX_IMAGE_PIXELS`, which we leave alone: changing it would change every other user of Pillow
in the process. Our `max_pixels` (40 MP) is below Pillow's warning threshold (≈89 MP), so any image
big enough for Pillow to warn about is one we then reject ourselves; Pillow's DecompressionBombError
(≈179 MP), and the warning where a caller's filter turns it into an exception, become the same
ImageError. We do not use `warnings.catch_warnings()` to silence the warning: it swaps the
process-global filter list, which races between threads (short of Python 3.14's opt-in context-aware
warnings), and the app serves many sessions at once. Nothing here mutates module or Pillow state, so
concurrent calls are independent.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib

import numpy as np
from PIL import Image

from vit_core.i18n import TranslatableError

# Importing a plugin registers its decoder. Doing it here for exactly the allowlisted formats means
# Image.open(formats=[...]) finds them without running Pillow's lazy discovery from many threads.
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

MAX_BYTES = 20 * 1024 * 1024  # a phone photo is 2-12 MB
MAX_PIXELS = 40_000_000  # 40 MP: above most phone cameras; Pillow holds it as RGB in 160 MB (4 B/px)
MIN_SIDE = 8  # below this a picture has less than one 16-px patch worth of content

# Sniffed by content. Values are Pillow format names, passed to Image.open(formats=[...]) so Pillow
# only ever runs the one decoder the signature names. Pillow 13 decodes all six natively; the JPEG
# decoder also takes MPO (multi-picture JPEG from phone cameras), and PNG / WEBP / GIF may be animated.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),  # little-endian
    (b"MM\x00*", "TIFF"),  # big-endian
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)
# Recognised but refused, so the message can say "HEIC is not supported" rather than "not an image".
_REFUSED_SIGNATURES = (
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),  # DOS EPS binary header
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),  # raw codestream
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}

# What Pillow raises for bad data, from Image.open, load, convert and getexif. Image.open turns a
# header parser's SyntaxError, IndexError, TypeError and struct.error into UnidentifiedImageError (an
# OSError); decoding and EXIF parsing let them all through. The hostile-corpus and mutation tests hold
# this list to account: anything else escaping is a test failure, not a silent catch-all.
_BAD_DATA = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
             zlib.error)
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)

_ORIENTATION_TAG = 0x0112
# EXIF orientation → the transpose that displays it upright (the same table as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# English messages; `.key` is what the UI translates, `.params` fills the blanks.
MESSAGES = {
    "image.empty": "The upload is empty (0 bytes).",
    "image.too_large": "The file is {size_mb:.1f} MB; the limit is {limit_mb:.0f} MB.",
    "image.not_an_image": "This file is not an image (accepted: {allowed}).",
    "image.unsupported_format": "{format} files are not supported; please upload one of: {allowed}.",
    "image.unsupported_mode": "This {format} image uses the colour mode {mode}, which cannot be shown.",
    "image.decompression_bomb": ("The image claims {megapixels:.1f} megapixels; the limit is "
                                 "{limit_megapixels:.1f}."),
    "image.truncated": "The file looks like a {format} image but is cut off or damaged.",
    "image.too_small": "The image is {width}×{height} pixels; each side needs at least {min_side}.",
}
ERROR_KEYS = tuple(MESSAGES)


class ImageError(TranslatableError):
    """A user-facing reason an upload was refused: `.key` (message id) and `.params` (its blanks)."""

    KEYS = ERROR_KEYS

    def __init__(self, key: str, params: dict | None = None):
        if key not in MESSAGES:
            raise ValueError(f"unknown image error key {key!r}")
        super().__init__(key, None, params)

    def __str__(self) -> str:
        return MESSAGES[self.key].format(**self.params)


def image_digest(data: bytes) -> str:
    """sha256 of the raw upload: the cache key for everything computed from this image."""
    return hashlib.sha256(data).hexdigest()


def sniff_format(data: bytes) -> str | None:
    """The allowlisted Pillow format the bytes start like, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # RIFF container: 4-byte length between the two
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def load_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               min_side: int = MIN_SIDE) -> Image.Image:
    """Decode untrusted bytes into a fully loaded, upright RGB image, or raise ImageError.

    Animated files give their first frame. Transparency is composited over white. 16-bit and
    32-bit grey (Pillow modes I;16*, I, F) are stretched, not clipped: see `_stretch_to_8bit`.
    `max_pixels` can only tighten Pillow's process-wide limit, never loosen it.
    """
    if not isinstance(data, bytes):
        data = memoryview(data).tobytes()  # bytearray / memoryview: a copy no caller can mutate under us
    if not data:
        raise ImageError("image.empty")
    if len(data) > max_bytes:
        raise ImageError("image.too_large", {"size": len(data), "limit": max_bytes,
                                             "size_mb": len(data) / 2**20, "limit_mb": max_bytes / 2**20})
    fmt = sniff_format(data)
    if fmt is None:
        refused = _refused_format(data)
        if refused:
            raise ImageError("image.unsupported_format", {"format": refused, "allowed": _allowed()})
        raise ImageError("image.not_an_image", {"allowed": _allowed()})

    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:  # reads the header only
            _check_size(im.size, max_pixels, min_side)
            im.load()  # decodes the first frame; truncated data raises (LOAD_TRUNCATED_IMAGES stays off)
            _check_size(im.size, max_pixels, min_side)  # some decoders settle the size only now
            orientation = _orientation(im)  # after load(): PNG's getexif() would otherwise load, swallowed
            rgb = _to_rgb(im, fmt)
    except _BOMB as err:  # Pillow's own guard, from its global limit
        raise ImageError("image.decompression_bomb", _bomb_params(None, max_pixels, err)) from err
    except _BAD_DATA as err:  # the signature matched, but the header or the data is cut off or broken
        raise ImageError("image.truncated", {"format": fmt}) from err

    if orientation in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    rgb.info = {}  # drop EXIF and friends: the orientation is now in the pixels, never to be applied twice
    return rgb


def _check_size(size: tuple[int, int], max_pixels: int, min_side: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError("image.decompression_bomb", _bomb_params(size, max_pixels))
    if min(width, height) < min_side:
        raise ImageError("image.too_small", {"width": width, "height": height, "min_side": min_side})


def _bomb_params(size: tuple[int, int] | None, max_pixels: int, err: Exception | None = None) -> dict:
    """Message blanks. When Pillow's own guard fired, inside Image.open, the size is only in its message;
    it fires above Image.MAX_IMAGE_PIXELS (warning) or twice that (error), a true lower bound otherwise."""
    if size is not None:
        width, height = size
        pixels = width * height
    else:
        width = height = None
        found = re.search(r"\((\d+) pixels\)", str(err))
        floor = (Image.MAX_IMAGE_PIXELS or 0) * (2 if isinstance(err, Image.DecompressionBombError) else 1)
        pixels = int(found.group(1)) if found else floor
    return {"width": width, "height": height, "megapixels": pixels / 1e6, "limit_megapixels": max_pixels / 1e6}


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8), or 1 when absent or unreadable: broken metadata never costs a photo."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _BAD_DATA:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _to_rgb(im: Image.Image, fmt: str) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(im)
        grey = _stretch_to_8bit(values)
        if isinstance(im.info.get("transparency"), int):  # 16-bit PNG grey with a transparent value
            grey[values == im.info["transparency"]] = 255  # over white, as below
        return Image.fromarray(grey).convert("RGB")  # uint8 (H, W) -> mode L
    if im.has_transparency_data:
        # P + tRNS, LA, PA, RGBA, and L/RGB with a transparent colour key. Over white, not black:
        # a transparent logo on black would be a black blob to a model trained on photos.
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")  # convert() to the same mode copies
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba)  # out = a·rgb + (1 - a)·white; 8 bytes a pixel, not alpha_composite's 15
        return out
    try:
        return im.convert("RGB")  # L, 1, P, CMYK (Pillow's naive formula), YCbCr, RGBX, ...
    except ValueError as err:  # e.g. TIFF in CIE LAB: Pillow has no conversion without a colour profile
        raise ImageError("image.unsupported_mode", {"format": fmt, "mode": im.mode}) from err


def _stretch_to_8bit(a: np.ndarray) -> np.ndarray:
    """Map high-bit-depth grey onto 0..255 by its real range.

    The rule: with lo and hi the smallest and largest finite values, v -> round(255 * (v - lo) / (hi - lo)).
    A 12-bit scan stored in 16 bits (0..4095) thus uses the full 0..255, where clipping or dividing
    by 257 would leave it nearly black. A flat image (hi == lo) maps to 0. In float (F) images NaN
    and -inf count as lo (-> 0) and +inf as hi (-> 255).
    """
    a = a.astype(np.float64)  # one copy, then in place; float64 holds every int32 difference exactly
    finite = np.isfinite(a)
    if not finite.all():
        lo, hi = (a[finite].min(), a[finite].max()) if finite.any() else (0.0, 0.0)
        a[np.isnan(a) | np.isneginf(a)] = lo
        a[np.isposinf(a)] = hi
    lo, hi = a.min(), a.max()
    a -= lo
    if hi > lo:
        a *= 255.0 / (hi - lo)
    return np.rint(a, out=a).astype(np.uint8)


def _refused_format(data: bytes) -> str | None:
    for magic, name in _REFUSED_SIGNATURES:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":  # ISO base media: HEIC from iPhones, AVIF from the web
        return _HEIF_BRANDS.get(data[8:12])
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if (head.startswith(b"<?xml") or head.startswith(b"<svg")) and b"<svg" in head:
        return "SVG"
    return None


def _allowed() -> str:
    return ", ".join(ALLOWED_FORMATS)
