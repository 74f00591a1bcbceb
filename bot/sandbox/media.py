"""Tiny but structurally valid media for the sandbox fakes.

The fakes hand back real media, made on the fly without binary fixtures: PNGs that Pillow decodes and
MP4s (H.264 + AAC, with a tone) that any player opens and the stitch can cut, made with PyAV, the same
FFmpeg binding the stitch uses.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from functools import lru_cache

import av
import numpy as np
from PIL import Image

__all__ = ["CLIP_SIZES", "NOT_MP4_HTML", "encode_clip", "padded_mp4", "speech_pcm", "tiny_mp4", "tiny_png"]

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


#: Frame sizes of the sandbox clips: small enough to make in milliseconds, the aspect of the request.
CLIP_SIZES: dict[str, tuple[int, int]] = {"9:16": (160, 284), "16:9": (284, 160), "1:1": (160, 160)}

#: Frames per second of the sandbox clips: few, so they stay small, but a real video stream.
CLIP_FPS = 4

#: The sandbox clips' sound: a tone at this pitch, so a newcomer hears that audio made it through.
TONE_HZ = 440.0

_AUDIO_RATE = 24_000
_AUDIO_FRAME = 1024

#: The sandbox narration's pitch: lower than the clips' tone, so both can be heard in a mix.
SPEECH_HZ = 220.0


@lru_cache(maxsize=64)
def speech_pcm(seconds: float, rate: int = _AUDIO_RATE) -> bytes:
    """Stand-in speech as Gemini TTS sends it: signed 16-bit little-endian mono PCM, a steady tone
    loud enough that the stitch's speech detector ducks the clip audio under it."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    samples = 0.3 * np.sin(2 * np.pi * SPEECH_HZ * t) * 32767
    return samples.astype("<i2").tobytes()


def _tone_frames(seconds: float) -> Iterator[av.AudioFrame]:
    """A quiet sine tone, ``seconds`` long, in AAC-sized mono frames."""
    total = round(seconds * _AUDIO_RATE)
    for start in range(0, total, _AUDIO_FRAME):
        count = min(_AUDIO_FRAME, total - start)
        t = (np.arange(start, start + count, dtype=np.float32)) / _AUDIO_RATE
        samples = (0.2 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = start
        yield frame


def _picture(size: tuple[int, int], index: int, count: int, colour: tuple[int, int, int]) -> Image.Image:
    """A solid background with a bar that crosses the frame, so playback visibly moves."""
    width, height = size
    image = Image.new("RGB", size, colour)
    bar = max(2, width // 8)
    x = round((width - bar) * index / max(count - 1, 1))
    image.paste((240, 240, 240), (x, height // 3, x + bar, height // 3 + bar))
    return image


@lru_cache(maxsize=32)
def tiny_mp4(seconds: float = 1.0, aspect: str = "9:16", colour: tuple[int, int, int] = (40, 90, 160)) -> bytes:
    """A real, playable H.264 + AAC MP4 of ``seconds`` (a moving bar over a colour, and a tone).

    Cached per argument set: the sandbox hands the same clip to every job of one length and aspect.
    """
    size = CLIP_SIZES.get(aspect, CLIP_SIZES["9:16"])
    return encode_clip(seconds, size, CLIP_FPS, colour)


def encode_clip(seconds: float, size: tuple[int, int], fps: int, colour: tuple[int, int, int]) -> bytes:
    """An H.264 + AAC MP4 made with PyAV, the library the stitch uses, of any size (benchmarks want 720x1280)."""
    if seconds <= 0:
        raise ValueError("a clip lasts more than 0 seconds")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "30"}
        audio = out.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        audio.bit_rate = 24_000
        count = max(1, round(seconds * fps))
        for index in range(count):
            picture = np.asarray(_picture(size, index, count, colour))
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for sound in _tone_frames(count / fps):
            out.mux(audio.encode(sound))
        out.mux(audio.encode(None))
    return buf.getvalue()


def padded_mp4(size: int) -> bytes:
    """A one-second ``tiny_mp4()`` grown to ``size`` bytes by a trailing ``free`` box (still playable)."""
    clip = tiny_mp4(1.0)
    padding = max(size - len(clip) - 8, 0)
    return clip + struct.pack(">I", 8 + padding) + b"free" + b"\x00" * padding
