"""The widget's logos, drawn in code: a PNG is a signature, an IHDR, zlib-compressed scanlines and an IEND,
so five flat logos need no image library and no binary files in the repository."""

from __future__ import annotations

import struct
import zlib

# File name → (width, height), as Kommo's widget structure page lists them.
LOGO_SIZES: dict[str, tuple[int, int]] = {
    "logo_main.png": (400, 272),
    "logo_small.png": (108, 108),
    "logo.png": (130, 100),
    "logo_medium.png": (240, 84),
    "logo_min.png": (84, 84),
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BACKGROUND = (47, 111, 219)
_MARK = (255, 255, 255)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pixel(x: int, y: int, width: int, height: int) -> tuple[int, int, int]:
    # Two white bars, one above the other, offset like a pair of sync arrows, centred on a blue field.
    side = min(width, height)
    bar_w, bar_h = side * 3 // 5, max(side // 10, 2)
    left = (width - bar_w) // 2
    shift = side // 10
    top1 = height // 2 - bar_h * 3 // 2
    top2 = height // 2 + bar_h // 2
    in_first = top1 <= y < top1 + bar_h and left - shift <= x < left - shift + bar_w
    in_second = top2 <= y < top2 + bar_h and left + shift <= x < left + shift + bar_w
    return _MARK if in_first or in_second else _BACKGROUND


def logo_png(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG of the logo at ``width`` × ``height``."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows.extend(_pixel(x, y, width, height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )
