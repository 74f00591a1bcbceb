"""Tiny but structurally valid media for the sandbox fakes.

The fakes must hand back bytes that the bot's own checks (magic numbers, Pillow decoding, size limits)
treat as real images and videos, without shipping binary fixtures.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache

from PIL import Image

__all__ = ["NOT_MP4_HTML", "padded_mp4", "tiny_mp4", "tiny_png"]

#: What a misconfigured CDN or proxy returns instead of a video: used for the "not_mp4" outcome.
NOT_MP4_HTML: bytes = (
    b"<!DOCTYPE html><html><head><title>Sandbox</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>Sandbox: this is not a video.</p></body></html>\n"
)


@lru_cache(maxsize=64)
def tiny_png(width: int = 64, height: int = 36, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A solid-colour PNG that Pillow (and every image viewer) can decode."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    """One ISO-BMFF box: 32-bit big-endian size including the 8-byte header, then the type."""
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _mvhd() -> bytes:
    """A version-0 movie header (timescale 1000, duration 1 s) so ``moov`` is not empty."""
    identity = (0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    payload = (
        struct.pack(">I", 0)  # version 0, flags 0
        + struct.pack(">IIII", 0, 0, 1000, 1000)  # creation, modification, timescale, duration
        + struct.pack(">IH", 0x00010000, 0x0100)  # rate 1.0, volume 1.0
        + b"\x00" * 10  # reserved
        + struct.pack(">9I", *identity)  # unity matrix
        + b"\x00" * 24  # pre_defined
        + struct.pack(">I", 2)  # next_track_ID
    )
    return _box(b"mvhd", payload)


@lru_cache(maxsize=1)
def tiny_mp4() -> bytes:
    """A few hundred bytes shaped like an MP4 (``ftyp`` + ``moov`` + ``mdat``); it does not play."""
    ftyp = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    moov = _box(b"moov", _mvhd())
    mdat = _box(b"mdat", b"Sandbox video payload.\x00" * 4)
    return ftyp + moov + mdat


def padded_mp4(size: int) -> bytes:
    """``tiny_mp4()`` grown to ``size`` bytes by enlarging its ``mdat`` box (still well-formed)."""
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + _box(b"moov", _mvhd())
    payload_len = max(size - len(head) - 8, 0)
    return head + _box(b"mdat", b"\x00" * payload_len)
