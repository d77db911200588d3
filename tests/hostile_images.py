"""A corpus of hostile and awkward uploads, generated on the fly (no binary fixtures in the repo).

Each case is (name, bytes, expected): expected is an ImageError key, "ok" (must load), "error" (must
raise ImageError, any key) or None (either loads or raises ImageError; never anything else).
Crafted headers are built byte by byte with correct checksums, so a bomb is a few hundred bytes.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo_like(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: enough structure for lossy codecs to use every code path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin((x + y) / 6)], axis=-1)
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def frames(size=(32, 24), colours=((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> list[Image.Image]:
    return [Image.new("RGB", size, c) for c in colours]


# --- PNG, byte by byte -------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def crafted_png(width: int, height: int, idat: bytes = b"", bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG whose IHDR claims width×height over whatever IDAT we give it (default: none at all)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@functools.lru_cache(maxsize=None)
def real_png_bomb(side: int = 6400) -> bytes:
    """A genuine, fully decodable grey PNG of side×side zeros: 41 MP in ~40 kB."""
    z = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return crafted_png(side, side, idat)


def png_with_bad_crc(data: bytes, kind: bytes) -> bytes:
    """Flip the CRC of the first chunk of this kind in a valid PNG."""
    i = data.index(kind) - 4
    length = struct.unpack(">I", data[i:i + 4])[0]
    crc_at = i + 8 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at:crc_at + 4]) + data[crc_at + 4:]


# --- other crafted headers ---------------------------------------------------------------------------

def gif_with_screen(width: int, height: int, frame=(1, 1)) -> bytes:
    """A GIF: logical screen width×height, one frame of frame=(w, h) pixels of colour 0.

    Valid up to 4096 frame pixels; beyond that the pixel data stops early (a header-only bomb)."""
    fw, fh = frame
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, fw, fh, 0)
    pixels = _lzw_zeros(min(fw * fh, 4096))
    return header + descriptor + b"\x02" + _gif_blocks(pixels) + b"\x00;"


def _lzw_zeros(n: int) -> bytes:
    """GIF LZW for n zero pixels with min code size 2, emitting a clear before the table grows."""
    bits, nbits, out = 0, 0, bytearray()

    def emit(code, width=3):
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    emit(4)
    for i in range(n):
        emit(0)
        if i % 2 == 1:  # each code after the first adds a table entry; clear before codes need 4 bits
            emit(4)
    emit(5)
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)


def _gif_blocks(data: bytes) -> bytes:
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF0/SOF2 dimensions of a valid baseline/progressive JPEG."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i > 0:
            return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]
    raise ValueError("no SOF0/SOF2 marker")


def bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def webp_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the 14-bit dimensions of a simple lossy WebP ('VP8 ' chunk)."""
    assert data[12:16] == b"VP8 "
    return data[:26] + struct.pack("<HH", width & 0x3FFF, height & 0x3FFF) + data[30:]


def tiff_claiming(width: int, height: int) -> bytes:
    """A minimal little-endian grey TIFF with one tiny strip but a header claiming width×height."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8 + 2 + 12 * 8 + 4), (278, 4, height), (279, 4, 16)]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", tag, typ, 1, value) for tag, typ, value in entries) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def psd(width: int = 16, height: int = 16) -> bytes:
    """A minimal real Photoshop file: RGB, 8 bit, raw planes."""
    head = b"8BPS" + struct.pack(">H6sHIIHH", 1, b"", 3, height, width, 8, 3)
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + b"\x80" * (3 * width * height)


def zip_of(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, payload)
    return buf.getvalue()


# --- the corpus ----------------------------------------------------------------------------------------

def valid_files() -> dict[str, bytes]:
    """One clean file per allowlisted format and variant: the seeds for truncation and mutation."""
    im = photo_like()
    exif = Image.Exif()
    exif[0x0112] = 6
    first, *rest = frames()
    return {
        "png": encode(im, "PNG"),
        "png_palette": encode(im.convert("P"), "PNG"),
        "apng": encode(first, "PNG", save_all=True, append_images=rest),
        "jpeg": encode(im, "JPEG", quality=90),
        "jpeg_progressive_exif": encode(im, "JPEG", progressive=True, exif=exif.tobytes()),
        "gif": encode(im, "GIF"),
        "gif_animated": encode(first, "GIF", save_all=True, append_images=rest),
        "webp_lossy": encode(im, "WEBP"),
        "webp_lossless_rgba": encode(im.convert("RGBA"), "WEBP", lossless=True),
        "webp_animated": encode(first, "WEBP", save_all=True, append_images=rest),
        "bmp": encode(im, "BMP"),
        "tiff_lzw": encode(im, "TIFF", compression="tiff_lzw"),
        "tiff_raw_16bit": encode(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)), "TIFF"),
    }


def cut_points(n: int) -> list[int]:
    """Where to cut a file of n bytes: inside the signature, the header, the data, and just short."""
    return sorted({1, 4, 8, 12, 20, 33, 64, n // 4, n // 2, 3 * n // 4, n - 30, n - 13, n - 2} & set(range(1, n)))


def hostile_corpus() -> list[tuple[str, bytes, str | None]]:
    rng = np.random.default_rng(2010_11929)
    im = photo_like()
    png, jpeg, gif, bmp, webp = (encode(im, f) for f in ("PNG", "JPEG", "GIF", "BMP", "WEBP"))
    html = (b"<!DOCTYPE html><html><body><img src='data:image/png;base64,iVBORw0KGgo='>"
            b"<script>alert(1)</script></body></html>")
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">' \
          b'<rect width="64" height="64" fill="red"/></svg>'
    bad_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff"
    huge_exif_offset = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"
    cases: list[tuple[str, bytes, str | None]] = [
        # not images at all
        ("empty", b"", "image.empty"),
        ("one_byte", b"\x89", "image.not_an_image"),
        ("random_100", rng.bytes(100), "image.not_an_image"),
        ("random_10k", rng.bytes(10_000), "image.not_an_image"),
        ("html", html, "image.not_an_image"),
        ("zip_of_png", zip_of("cat.png", png), "image.not_an_image"),
        ("tga_no_signature", encode(im, "TGA"), "image.not_an_image"),
        ("text_starting_BM", b"BMW 320i, 1998, low mileage " * 4, "image.truncated"),
        ("nul_bytes", b"\x00" * 4096, "image.not_an_image"),
        # recognised, refused formats
        ("psd", psd(), "image.unsupported_format"),
        ("pdf_with_jpeg", encode(im, "PDF"), "image.unsupported_format"),
        ("eps", encode(im, "EPS"), "image.unsupported_format"),
        ("svg", svg, "image.unsupported_format"),
        ("svg_bom", b"\xef\xbb\xbf  <svg width='9' height='9'/>", "image.unsupported_format"),
        ("ico", encode(im, "ICO"), "image.unsupported_format"),
        ("jpeg2000", encode(im, "JPEG2000"), "image.unsupported_format"),
        ("avif", encode(im, "AVIF"), "image.unsupported_format"),
        ("heic_header", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + rng.bytes(200),
         "image.unsupported_format"),
        ("qoi", encode(im, "QOI"), "image.unsupported_format"),
        # decompression bombs and absurd sizes: rejected from the header, before any decoding
        ("png_100000x100000_no_data", crafted_png(100_000, 100_000), "image.decompression_bomb"),
        ("png_100000x100000_tiny_idat", crafted_png(100_000, 100_000, zlib.compress(b"\0" * 10_000)),
         "image.decompression_bomb"),
        ("png_10000x10000_pillow_warning_band", crafted_png(10_000, 10_000), "image.decompression_bomb"),
        ("png_7000x7000_our_band", crafted_png(7_000, 7_000), "image.decompression_bomb"),
        ("png_real_41MP_zeros", real_png_bomb(), "image.decompression_bomb"),
        ("png_rgba16_20000x20000", crafted_png(20_000, 20_000, bit_depth=16, colour_type=6),
         "image.decompression_bomb"),
        ("gif_screen_65535x65535", gif_with_screen(65535, 65535), "image.decompression_bomb"),
        ("gif_screen_8000x6000", gif_with_screen(8000, 6000), "image.decompression_bomb"),
        ("gif_frame_beyond_screen", gif_with_screen(16, 16, frame=(9000, 9000)), "image.decompression_bomb"),
        ("jpeg_sof_65500x65500", jpeg_with_size(jpeg, 65500, 65500), "image.decompression_bomb"),
        ("jpeg_sof_9000x9000", jpeg_with_size(jpeg, 9000, 9000), "image.decompression_bomb"),
        ("bmp_50000x50000", bmp_with_size(bmp, 50_000, 50_000), "image.decompression_bomb"),
        ("webp_16383x16383", webp_with_size(webp, 16383, 16383), "image.decompression_bomb"),
        ("tiff_100000x100000", tiff_claiming(100_000, 100_000), "image.decompression_bomb"),
        # zero and tiny sizes
        ("png_0x0", crafted_png(0, 0), "error"),
        ("png_0x64", crafted_png(0, 64), "error"),
        ("gif_screen_0x0", gif_with_screen(0, 0, frame=(0, 0)), "error"),
        ("jpeg_sof_0x0", jpeg_with_size(jpeg, 0, 0), "error"),
        ("bmp_0x0", bmp_with_size(bmp, 0, 0), "error"),
        ("bmp_negative_width", bmp_with_size(bmp, -64, 48), "error"),
        ("png_4x4", encode(photo_like(4, 4), "PNG"), "image.too_small"),
        ("png_64x7", encode(photo_like(64, 7), "PNG"), "image.too_small"),
        ("png_8x8", encode(photo_like(8, 8), "PNG"), "ok"),
        # damaged but recognisable
        ("png_bad_ihdr_crc", png_with_bad_crc(png, b"IHDR"), "image.truncated"),
        ("png_bad_idat_crc", png_with_bad_crc(png, b"IDAT"), None),
        ("png_idat_garbage", crafted_png(64, 48, rng.bytes(500)), "image.truncated"),
        ("png_idat_short", crafted_png(64, 48, zlib.compress(b"\0" * 100)), "image.truncated"),
        ("jpeg_corrupt_exif", encode(im, "JPEG", exif=bad_exif), "ok"),
        ("jpeg_exif_offset_past_end", encode(im, "JPEG", exif=huge_exif_offset), "ok"),
        ("jpeg_exif_random", encode(im, "JPEG", exif=b"Exif\x00\x00" + rng.bytes(300)), "ok"),
        ("signature_only_png", PNG_MAGIC, "image.truncated"),
        ("signature_only_jpeg", b"\xff\xd8\xff", "image.truncated"),
        ("riff_webp_header_only", b"RIFF\x04\x00\x00\x00WEBP", "image.truncated"),
        # polyglots: a valid image with something else glued on, or inside
        ("jpeg_plus_zip", jpeg + zip_of("payload.js", b"alert(1)"), "ok"),
        ("png_plus_html", png + html, "ok"),
        ("png_text_chunk_script", png[:33] + png_chunk(b"tEXt", b"Comment\x00<script>alert(1)</script>") + png[33:],
         "ok"),
        ("gif_js_polyglot", b"GIF89a/*" + gif_with_screen(16, 16, frame=(16, 16))[8:] + b"*/=alert(1);", None),
        ("html_then_png", html + png, "image.not_an_image"),
        ("zip_then_png", zip_of("a.txt", b"hi") + png, "image.not_an_image"),
    ]
    for name, data in valid_files().items():
        for cut in cut_points(len(data)):
            cases.append((f"{name}_cut_{cut}_of_{len(data)}", data[:cut], None))
    return cases


def mutants(data: bytes, count: int, seed: int) -> list[bytes]:
    """Seeded random damage: flip, overwrite with 0x00/0xFF, delete, or duplicate a few bytes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(b)))
            op = rng.integers(0, 4)
            if op == 0:
                b[i] ^= 1 << int(rng.integers(0, 8))
            elif op == 1:
                b[i] = (0x00, 0xFF)[int(rng.integers(0, 2))]
            elif op == 2 and len(b) > 1:
                del b[i]
            else:
                b[i:i] = b[i:i + int(rng.integers(1, 16))]
        out.append(bytes(b))
    return out
