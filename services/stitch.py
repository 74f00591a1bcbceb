"""The stitch: ordered clips on disk become one finished, captioned short (MP4 + SRT) that fits an upload limit.

Why PyAV (``av`` on the package registry) and not imageio-ffmpeg: both install with nothing else on the
machine (PyAV's wheels bundle FFmpeg's libraries with libx264 and AAC; imageio-ffmpeg bundles an
``ffmpeg`` binary). PyAV was chosen because:

- Captions need a font. PyAV's FFmpeg has neither ``drawtext`` nor ``subtitles``; imageio-ffmpeg's
  binary has both, but they look fonts up through fontconfig, and a fresh machine or a slim container
  may have no font at all, so captions would silently vanish. Here captions are drawn with Pillow's
  bundled font (a dependency already) and blended into the frames: the same pixels everywhere.
- Probing is the same library: imageio-ffmpeg ships no ``ffprobe``; with PyAV the tests, the sandbox's
  clips and the stitch all read and write media through one API, with no output parsing.
- It is one in-process library (about 100 MB installed against 165 MB), and the stitch still runs in its
  own process (see ``stitch``), so a kill ends it and the bot's memory never holds a frame.

The work runs in a child process started with the forkserver context (spawn where there is none): the
event loop only waits on a pipe. Clips are decoded one at a time from disk, frame by frame; only one
segment's audio (at most a few MB) is in memory at once. Cancelling the awaiting task kills the child
and removes the partial file.

Two paths:

- **Re-encode** (captions on, narration given, or clips that differ): every clip is scaled and cropped
  to the aspect at a constant frame rate, narration is mixed over the clip's own audio (ducked under
  speech), each segment's caption is burned in for that segment's span, and H.264 is encoded at the bitrate
  the byte budget allows for the total duration (AAC audio reserved, a margin for the container),
  ``+faststart``. An output still over budget is encoded again at a lower bitrate.
- **Stream copy** (captions off, no narration, clips that share codec, size and audio format, already in
  the aspect, and fit the budget together): packets are remuxed in order, nothing decoded.

And the incremental way, for a pipeline whose clips arrive one by one: ``encode_piece`` re-encodes one
segment into its own MP4 as soon as its clip exists (every piece of a short with the same encoder
settings, each starting with an IDR frame), and ``join_pieces`` remuxes the pieces by stream copy once the
last one is done, so only the last piece and a cheap remux stand between the last clip and the upload.
A join that cannot be made (pieces that differ, or over the budget) fails, and the caller stitches the
whole short instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import multiprocessing
import multiprocessing.connection
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from connectors.errors import ReelwrightError, UserInputError
from services.child_processes import exit_with_parent

__all__ = [
    "AUDIO_BITRATE",
    "DEFAULT_PRESET",
    "Cue",
    "JoinRequest",
    "PieceRequest",
    "PieceResult",
    "Segment",
    "StitchFailed",
    "StitchRequest",
    "StitchResult",
    "configure_stitching",
    "encode_piece",
    "first_frame_jpeg",
    "frame_size",
    "join_in_this_process",
    "join_pieces",
    "piece_in_this_process",
    "shutdown_stitches",
    "srt_text",
    "stitch",
    "stitch_in_this_process",
    "stitch_pids",
    "video_bitrate",
]

Aspect = Literal["9:16", "16:9"]

#: AAC bitrate of the output, reserved out of the byte budget before the video gets the rest.
AUDIO_BITRATE = 128_000
AUDIO_RATE = 48_000
_AUDIO_CHUNK = 1024
#: Samples in one AAC-LC packet: the finest cut a stream copy can make in the sound.
_AAC_FRAME_SAMPLES = 1024

#: Share of the byte budget kept back for the MP4 boxes, the encoders' overshoot and rounding.
BUDGET_MARGIN = 0.05
#: Bytes kept back whatever the length: the ``moov`` index and the headers.
FIXED_OVERHEAD_BYTES = 96 * 1024
#: Below this the picture is mush: the short is refused rather than delivered unwatchable.
MIN_VIDEO_BITRATE = 150_000
#: Above this a vertical short gains nothing visible; bigger budgets make a smaller file instead.
MAX_VIDEO_BITRATE = 8_000_000
#: x264's constant quality: good for a phone screen. The budget's bitrate caps it (VBV), so a simple
#: picture makes a small file and a busy one still fits the upload limit.
CRF = 21
#: x264 preset, optionally followed by x264 options: CPU against file size and quality. veryfast with
#: the cheapest sub-pixel refinement and diamond motion search spends about 30 % less x264 CPU than plain
#: veryfast for 7-23 % more bytes at the same PSNR (and the same PSNR when the budget caps the bitrate);
#: superfast costs as much CPU for 50-60 % more bytes, and ultrafast, half the CPU, loses 5.6 dB of
#: PSNR when the budget caps it (figures in docs/short.md, from bench/bench_short.py).
DEFAULT_PRESET = "veryfast:subme=1:me=dia"
#: Keyframe interval in seconds. Pieces use it as a fixed GOP (no scene-cut keyframes): every piece
#: starts with an IDR frame and all pieces have the same structure.
GOP_SECONDS = 2
#: Each re-encode after an over-budget result aims this much lower.
_RETRY_FACTOR = 0.85
_MAX_ENCODES = 3

#: Clip audio gain while the narration speaks (about -12 dB), and how fast it goes down and back up.
DUCK_GAIN = 0.25
_DUCK_RAMP_SECONDS = 0.06
_SPEECH_HOLD_SECONDS = 0.2
_SPEECH_RMS = 0.01


class StitchFailed(ReelwrightError):
    """The stitch could not make the short (unreadable clip, encoder failure, child process died)."""

    user_message = "Putting the clips together failed. Please try again."


@dataclass(frozen=True)
class Segment:
    """One part of the short: its clip, the words said over it (the caption), optionally the narration audio."""

    clip: Path
    text: str = ""
    narration: Path | None = None


@dataclass(frozen=True)
class StitchRequest:
    """What to stitch and where the result goes (``output`` and the ``.srt`` beside it)."""

    segments: tuple[Segment, ...]
    output: Path
    aspect: Aspect = "9:16"
    captions: bool = True
    byte_budget: int = 50 * 1024 * 1024
    long_side: int = 1280
    fps: int = 24
    preset: str = DEFAULT_PRESET


@dataclass(frozen=True)
class PieceRequest:
    """One segment to encode into its own MP4, to be joined later with the short's other pieces.

    Every piece of one short must use the same ``aspect``, ``video_bitrate``, ``long_side``, ``fps`` and
    ``preset``: only then do the pieces share their H.264 parameter sets and can be joined by stream copy.
    ``video_bitrate`` is the cap for the whole short, ``video_bitrate(budget, seconds, pieces=n)``.
    """

    segment: Segment
    output: Path
    aspect: Aspect
    captions: bool
    video_bitrate: int
    long_side: int = 1280
    fps: int = 24
    preset: str = DEFAULT_PRESET

    def __post_init__(self) -> None:
        if self.video_bitrate <= 0 or self.fps <= 0 or self.long_side <= 0:
            raise ValueError("video_bitrate, fps and long_side must be positive")


@dataclass(frozen=True)
class PieceResult:
    """An encoded piece: exactly ``round(clip length × fps)`` frames, its audio exactly as long."""

    path: Path
    duration: float
    size: int
    text: str
    cpu_seconds: float
    peak_rss_bytes: int


@dataclass(frozen=True)
class JoinRequest:
    """Pieces in order (results of ``encode_piece``, or their files), each piece's caption text (for the
    SRT, one cue per piece; empty text, no cue), where the short goes, and the upload limit."""

    pieces: tuple[PieceResult | Path, ...]
    texts: tuple[str, ...]
    output: Path
    byte_budget: int

    def __post_init__(self) -> None:
        if not self.pieces:
            raise ValueError("a join needs at least one piece")
        if len(self.texts) != len(self.pieces):
            raise ValueError("one caption text per piece")


@dataclass(frozen=True)
class Cue:
    """A caption's span in the output, in seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class StitchResult:
    """The finished files and what it took to make them (the child's own CPU time and peak memory)."""

    video: Path
    srt: Path
    duration: float
    size: int
    stream_copied: bool
    cues: tuple[Cue, ...]
    video_bitrate: int | None = None
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    encodes: int = 0


@dataclass(frozen=True)
class _ClipInfo:
    path: Path
    width: int
    height: int
    duration: float
    video_codec: str
    pix_fmt: str | None
    extradata: bytes | None
    audio: tuple[str, int, int] | None
    size: int


# -- plain functions (also used by callers that plan a short) ---------------------------------------


def frame_size(aspect: Aspect, long_side: int) -> tuple[int, int]:
    """Output width and height for ``aspect``, even numbers (H.264 4:2:0 needs them), height a multiple of 4."""
    short_side = round(long_side * 9 / 16 / 2) * 2
    long_even = round(long_side / 4) * 4
    return (short_side, long_even) if aspect == "9:16" else (long_even, round(short_side / 4) * 4)


def video_bitrate(byte_budget: int, seconds: float, audio_bitrate: int = AUDIO_BITRATE, *, pieces: int = 1) -> int:
    """The H.264 bitrate that keeps ``seconds`` of video plus AAC audio under ``byte_budget`` bytes.

    The budget loses a margin and a fixed overhead for the container; the audio's share is reserved;
    one more second of video is kept back per encode (``pieces`` of them when the short is encoded as
    pieces) because each encode's rate control (a one-second buffer that starts nearly full) may run
    that far ahead of its average.
    """
    if seconds <= 0:
        raise ValueError("a short lasts more than 0 seconds")
    if pieces < 1:
        raise ValueError("a short is encoded in one piece or more")
    usable_bits = (byte_budget * (1 - BUDGET_MARGIN) - FIXED_OVERHEAD_BYTES) * 8
    video_bits = usable_bits - audio_bitrate * 1.05 * seconds
    bitrate = int(video_bits / (seconds + pieces))
    if bitrate < MIN_VIDEO_BITRATE:
        raise UserInputError(
            f"A {seconds:.0f}-second short cannot fit in {byte_budget / 1_048_576:.1f} MB at a watchable quality: "
            "use fewer segments."
        )
    return min(bitrate, MAX_VIDEO_BITRATE)


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def srt_text(cues: Sequence[Cue]) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, the text, a blank line."""
    blocks = [
        f"{number}\n{_timestamp(cue.start)} --> {_timestamp(cue.end)}\n{cue.text}\n"
        for number, cue in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


# -- probing ----------------------------------------------------------------------------------------


def _probe(path: Path) -> _ClipInfo:
    """A clip's picture size, length and codecs, from its headers (and its last packets when they lack one)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise StitchFailed(f"{path.name} has no video stream")
            video = container.streams.video[0]
            ctx = video.codec_context
            duration: float | None = None
            if video.duration is not None and video.time_base is not None:
                duration = float(video.duration * video.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            audio: tuple[str, int, int] | None = None
            if container.streams.audio:
                actx = container.streams.audio[0].codec_context
                audio = (actx.name, actx.sample_rate, actx.channels)
            info = _ClipInfo(
                path=path,
                width=ctx.width,
                height=ctx.height,
                duration=duration or 0.0,
                video_codec=ctx.name,
                pix_fmt=ctx.pix_fmt,
                extradata=bytes(ctx.extradata) if ctx.extradata else None,
                audio=audio,
                size=path.stat().st_size,
            )
    except (av.FFmpegError, OSError) as exc:
        raise StitchFailed(f"cannot read {path.name}: {exc}") from exc
    if info.duration <= 0 or info.width <= 0 or info.height <= 0:
        raise StitchFailed(f"{path.name} has no length or no picture size")
    return info


# -- captions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Overlay:
    """A caption ready to blend into yuv420p frames: per plane, the rows it covers, its pixels times alpha,
    and 255 minus alpha (integer blending, no float work per frame)."""

    planes: tuple[tuple[int, int, int, int, npt.NDArray[np.uint16], npt.NDArray[np.uint16]], ...]


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise StitchFailed("Pillow was built without FreeType; captions need it")
    return font


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > max_width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def _caption_image(text: str, width: int, height: int) -> tuple[Image.Image, int]:
    """White text with a dark outline, wrapped to the frame, in the lower part (above a vertical app's buttons).

    Returns the RGBA strip and the row where it goes.
    """
    base = max(10, round(min(width, height) * 0.065))
    max_lines = 4
    max_width = width * 0.88
    size = base
    lines = _wrap(text, _font(size), max_width)
    while len(lines) > max_lines and size > base * 0.6:
        size = max(8, round(size * 0.9))
        lines = _wrap(text, _font(size), max_width)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1] + " …"]
    font = _font(size)
    stroke = max(1, size // 12)
    line_height = round(size * 1.25)
    strip_height = line_height * len(lines) + 2 * stroke + 4
    image = Image.new("RGBA", (width, strip_height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text(
            (width / 2, stroke + 2 + index * line_height),
            line,
            font=font,
            anchor="ma",
            fill=(255, 255, 255, 255),
            stroke_width=stroke,
            stroke_fill=(0, 0, 0, 255),
        )
    bottom = round(height * (0.80 if height > width else 0.92))
    top = max(0, min(bottom - strip_height, height - strip_height))
    return image, top - top % 2


def _overlay(text: str, width: int, height: int) -> _Overlay | None:
    """The caption converted once to the frames' YUV planes (chroma at half size)."""
    if not text:
        return None
    image, top = _caption_image(text, width, height)
    strip_height = min(image.height, height - top)
    image = image.crop((0, 0, width, strip_height))
    alpha = image.getchannel("A")
    ycbcr = image.convert("RGB").convert("YCbCr")
    planes = []
    for index, channel in enumerate(ycbcr.split()):
        plane_alpha = alpha
        plane_top = top
        if index > 0:
            half = (width // 2, (strip_height + 1) // 2)
            channel = channel.resize(half, Image.Resampling.BOX)
            plane_alpha = alpha.resize(half, Image.Resampling.BOX)
            plane_top = top // 2
        a = np.asarray(plane_alpha, dtype=np.uint16)
        rows = np.nonzero(a.any(axis=1))[0]
        if rows.size == 0:
            continue
        first, last = int(rows[0]), int(rows[-1]) + 1
        a = a[first:last]
        pixels = np.asarray(channel, dtype=np.uint16)[first:last]
        planes.append((index, plane_top + first, plane_top + last, a.shape[1], pixels * a, 255 - a))
    return _Overlay(tuple(planes)) if planes else None


def _blend_in_place(frame: av.VideoFrame, overlay: _Overlay) -> None:
    """Blend the caption into ``frame`` (yuv420p), touching only the caption's rows of each plane.

    Writing into the frame's own planes (copied first only if the decoder still holds them) spares two
    whole-picture copies per frame, a fifth of the CPU that is not x264's.
    """
    frame.make_writable()
    planes = frame.planes
    for index, top, bottom, plane_width, premultiplied, inverse_alpha in overlay.planes:
        plane = planes[index]
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        region = rows[top:bottom, :plane_width]
        region[...] = ((region * inverse_alpha + premultiplied + 127) // 255).astype(np.uint8)


# -- audio ------------------------------------------------------------------------------------------


def _decode_audio(path: Path, samples: int) -> npt.NDArray[np.float32]:
    """The first ``samples`` of ``path``'s audio as 48 kHz stereo float, padded with silence."""
    out = np.zeros((2, samples), dtype=np.float32)
    filled = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return out
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
            frames: Iterator[av.AudioFrame] = container.decode(audio=0)
            for decoded in (*frames, None):
                for frame in resampler.resample(decoded):
                    chunk = frame.to_ndarray()
                    take = min(chunk.shape[1], samples - filled)
                    out[:, filled : filled + take] = chunk[:, :take]
                    filled += take
                if filled >= samples:
                    break
    except av.FFmpegError as exc:
        raise StitchFailed(f"cannot read the audio of {path.name}: {exc}") from exc
    return out


def _smooth(values: npt.NDArray[np.float32], width: int) -> npt.NDArray[np.float32]:
    """A moving average over ``width`` samples, centred like ``np.convolve(..., mode="same")`` with a box
    kernel, from running sums: linear in the length, where the convolution costs ``width`` times more."""
    if width <= 1:
        return values
    count = values.shape[0]
    running = np.concatenate(([0.0], np.cumsum(values, dtype=np.float64)))
    last = np.arange(count) + (width - 1) // 2
    ends = np.minimum(last + 1, count)
    starts = np.clip(last + 1 - width, 0, count)
    smoothed: npt.NDArray[np.float32] = ((running[ends] - running[starts]) / width).astype(np.float32)
    return smoothed


def _duck_and_mix(clip: npt.NDArray[np.float32], narration: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Narration over the clip's sound, the clip lowered to ``DUCK_GAIN`` wherever the narration speaks."""
    window = AUDIO_RATE // 50
    count = narration.shape[1] // window
    if count == 0:
        mixed: npt.NDArray[np.float32] = np.clip(clip + narration, -1.0, 1.0).astype(np.float32)
        return mixed
    power = np.square(narration[:, : count * window]).mean(axis=0).reshape(count, window).mean(axis=1)
    speaking = (np.sqrt(power) > _SPEECH_RMS).astype(np.float32)
    hold = max(1, round(_SPEECH_HOLD_SECONDS * 50))
    held = np.convolve(speaking, np.ones(2 * hold + 1, dtype=np.float32), mode="full")[hold : hold + count]
    speaking = np.minimum(1.0, held)
    per_sample = np.repeat(speaking, window)
    per_sample = np.pad(per_sample, (0, clip.shape[1] - per_sample.shape[0]), mode="edge")
    per_sample = _smooth(per_sample.astype(np.float32), round(_DUCK_RAMP_SECONDS * AUDIO_RATE))
    gain = 1.0 - (1.0 - DUCK_GAIN) * per_sample
    return np.clip(clip * gain + narration, -1.0, 1.0).astype(np.float32)


# -- the re-encode path -----------------------------------------------------------------------------


def _video_graph(stream: av.VideoStream, width: int, height: int, fps: int) -> av.filter.Graph:
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    scale = graph.add("scale", f"{width}:{height}:force_original_aspect_ratio=increase")
    crop = graph.add("crop", f"{width}:{height}")
    rate = graph.add("fps", str(fps))
    pixels = graph.add("format", "yuv420p")
    sink = graph.add("buffersink")
    source.link_to(scale)
    scale.link_to(crop)
    crop.link_to(rate)
    rate.link_to(pixels)
    pixels.link_to(sink)
    graph.configure()
    return graph


def _pull_all(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    while True:
        try:
            frame = graph.vpull()
        except (BlockingIOError, EOFError):
            return
        yield frame


def _clip_frames(path: Path, width: int, height: int, fps: int) -> Iterator[av.VideoFrame]:
    """``path``'s pictures scaled and cropped to ``width``×``height`` at ``fps``, decoded one at a time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        graph = _video_graph(stream, width, height, fps)
        for frame in container.decode(stream):
            graph.push(frame)
            yield from _pull_all(graph)
        graph.push(None)
        yield from _pull_all(graph)


def _segment_frames(
    path: Path, count: int, width: int, height: int, fps: int, overlay: _Overlay | None
) -> Iterator[av.VideoFrame]:
    """Exactly ``count`` frames with the caption in: the clip's, the last one held if the clip runs short."""
    produced = 0
    last: av.VideoFrame | None = None
    for frame in _clip_frames(path, width, height, fps):
        if produced >= count:
            break
        if overlay is not None:
            _blend_in_place(frame, overlay)
        last = frame
        produced += 1
        yield frame
    if last is None:
        raise StitchFailed(f"{path.name} has no pictures")
    while produced < count:
        produced += 1
        yield last


def _audio_frames(audio: npt.NDArray[np.float32], first_sample: int) -> Iterator[av.AudioFrame]:
    for offset in range(0, audio.shape[1], _AUDIO_CHUNK):
        chunk = np.ascontiguousarray(audio[:, offset : offset + _AUDIO_CHUNK])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = first_sample + offset
        frame.time_base = Fraction(1, AUDIO_RATE)
        yield frame


@dataclass
class _Plan:
    clips: list[_ClipInfo]
    frame_counts: list[int]
    cues: list[Cue]
    spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def duration_frames(self) -> int:
        return sum(self.frame_counts)


def _plan(request: StitchRequest, clips: list[_ClipInfo]) -> _Plan:
    counts = [max(1, round(clip.duration * request.fps)) for clip in clips]
    spans: list[tuple[float, float]] = []
    cues: list[Cue] = []
    start = 0
    for count, segment in zip(counts, request.segments, strict=True):
        span = (start / request.fps, (start + count) / request.fps)
        spans.append(span)
        text = _clean_caption(segment.text)
        if text:
            cues.append(Cue(span[0], span[1], text))
        start += count
    return _Plan(clips, counts, cues, spans)


def _x264_options(preset: str, bitrate: int, fps: int, *, fixed_gop: bool) -> dict[str, str]:
    """libx264's options: ``preset`` is a preset name, optionally followed by ``:key=value`` x264 options.

    ``fixed_gop`` (pieces) makes every encode with the same settings produce the same parameter sets and
    GOP structure (``stitchable``, no scene-cut keyframes), so that pieces can be joined by stream copy.
    A piece also encodes on one thread unless ``preset`` says otherwise: pieces run side by side
    (``configure_stitching``), which keeps the cores busy without x264's frame-threading overhead
    (5-10 % of its CPU), and one 8-second piece takes a couple of seconds even so.
    """
    name, _, extra = preset.partition(":")
    params = [param for param in extra.split(":") if param]
    if fixed_gop:
        params = ["threads=1", *params, "stitchable=1", "scenecut=0"]
    options = {
        "preset": name,
        "crf": str(CRF),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
        "g": str(fps * GOP_SECONDS),
        "profile": "high",
    }
    if params:
        options["x264-params"] = ":".join(params)
    return options


def _add_streams(
    out: av.container.OutputContainer, width: int, height: int, fps: int, options: dict[str, str]
) -> tuple[av.video.stream.VideoStream, av.audio.stream.AudioStream]:
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height = width, height
    video.pix_fmt = "yuv420p"
    video.codec_context.time_base = Fraction(1, fps)
    video.options = dict(options)
    audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
    audio.bit_rate = AUDIO_BITRATE
    return video, audio


def _mux_segment(
    out: av.container.OutputContainer,
    streams: tuple[av.video.stream.VideoStream, av.audio.stream.AudioStream],
    segment: Segment,
    count: int,
    first_frame: int,
    fps: int,
    captions: bool,
) -> None:
    """Encode one segment's ``count`` frames and exactly as long audio, starting at frame ``first_frame``."""
    video, audio = streams
    width, height = video.width, video.height
    frame_time = Fraction(1, fps)
    first_sample = round(first_frame / fps * AUDIO_RATE)
    samples = round((first_frame + count) / fps * AUDIO_RATE) - first_sample
    sound = _decode_audio(segment.clip, samples)
    if segment.narration is not None:
        sound = _duck_and_mix(sound, _decode_audio(segment.narration, samples))
    audio_frames = _audio_frames(sound, first_sample)
    pending = next(audio_frames, None)
    overlay = _overlay(_clean_caption(segment.text), width, height) if captions else None
    frame_index = first_frame
    for frame in _segment_frames(segment.clip, count, width, height, fps, overlay):
        frame.pts = frame_index
        frame.time_base = frame_time
        frame.pict_type = av.video.frame.PictureType.NONE
        out.mux(video.encode(frame))
        frame_index += 1
        horizon = round((frame_index / fps + 0.5) * AUDIO_RATE)
        while pending is not None and pending.pts is not None and pending.pts < horizon:
            out.mux(audio.encode(pending))
            pending = next(audio_frames, None)
    while pending is not None:
        out.mux(audio.encode(pending))
        pending = next(audio_frames, None)


def _encode(request: StitchRequest, plan: _Plan, bitrate: int, target: Path) -> None:
    width, height = frame_size(request.aspect, request.long_side)
    options = _x264_options(request.preset, bitrate, request.fps, fixed_gop=False)
    with av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        streams = _add_streams(out, width, height, request.fps, options)
        frame_index = 0
        for count, segment in zip(plan.frame_counts, request.segments, strict=True):
            _mux_segment(out, streams, segment, count, frame_index, request.fps, request.captions)
            frame_index += count
        for stream in streams:
            out.mux(stream.encode(None))


# -- the stream-copy path ---------------------------------------------------------------------------


def _aspect_of(width: int, height: int) -> Aspect | None:
    ratio = width / height
    if abs(ratio - 9 / 16) < 0.02:
        return "9:16"
    if abs(ratio - 16 / 9) < 0.02:
        return "16:9"
    return None


def _can_copy(request: StitchRequest, clips: list[_ClipInfo]) -> bool:
    if request.captions and any(_clean_caption(segment.text) for segment in request.segments):
        return False
    if any(segment.narration is not None for segment in request.segments):
        return False
    first = clips[0]
    same = all(
        (clip.video_codec, clip.width, clip.height, clip.pix_fmt, clip.extradata, clip.audio)
        == (first.video_codec, first.width, first.height, first.pix_fmt, first.extradata, first.audio)
        for clip in clips
    )
    fits = sum(clip.size for clip in clips) <= request.byte_budget * (1 - BUDGET_MARGIN)
    return (
        same
        and first.video_codec == "h264"
        and first.audio is not None
        and first.audio[0] == "aac"
        and _aspect_of(first.width, first.height) == request.aspect
        and fits
    )


def _stream_signature(container: av.container.InputContainer) -> dict[str, object]:
    """What must be equal for two files' packets to follow each other in one stream, by name."""
    video, audio = container.streams.video[0], container.streams.audio[0]
    vctx, actx = video.codec_context, audio.codec_context
    return {
        "video codec": vctx.name,
        "picture size": (vctx.width, vctx.height),
        "pixel format": vctx.pix_fmt,
        "H.264 parameter sets (SPS/PPS)": bytes(vctx.extradata or b""),
        "video time base": video.time_base,
        "audio codec": actx.name,
        "audio format": (actx.sample_rate, actx.channels),
        "AAC configuration": bytes(actx.extradata or b""),
        "audio time base": audio.time_base,
    }


def _time(packet: av.Packet[Any], value: int | None) -> int:
    if value is None:
        raise StitchFailed(f"a {packet.stream.type} packet has no timestamp")
    return value


@dataclass
class _Part:
    """One file's packets, read whole for a join (a piece is a few MB at most)."""

    path: Path
    signature: dict[str, object]
    video_base: Fraction
    audio_base: Fraction
    sample_rate: int
    video: list[av.Packet[Any]]
    priming: list[av.Packet[Any]]
    sound: list[av.Packet[Any]]
    first_pts: int
    video_length: int


def _read_part(path: Path, number: int) -> _Part:
    """A file's stream signature, video packets, AAC priming packets (before time 0) and other audio packets."""
    name = f"part {number + 1} ({path.name})"
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise StitchFailed(f"cannot read {name}: {exc}") from exc
    with container:
        if not container.streams.video or not container.streams.audio:
            raise StitchFailed(f"{name} lacks a video or an audio stream")
        signature = _stream_signature(container)
        video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
        if video_stream.time_base is None or audio_stream.time_base is None:
            raise StitchFailed(f"{name} has no time base")
        video_base, audio_base = Fraction(video_stream.time_base), Fraction(audio_stream.time_base)
        sample_rate = audio_stream.codec_context.sample_rate
        video: list[av.Packet[Any]] = []
        audio: list[av.Packet[Any]] = []
        for packet in container.demux(video_stream, audio_stream):
            if packet.size:
                (video if packet.stream.type == "video" else audio).append(packet)
    if not video or not audio:
        raise StitchFailed(f"{name} has no pictures or no sound")
    if not video[0].is_keyframe:
        raise StitchFailed(f"{name} does not start with a keyframe")
    first_pts = min(_time(packet, packet.pts) for packet in video)
    end = max(_time(packet, packet.pts) + (packet.duration or 0) for packet in video)
    if end <= first_pts:
        raise StitchFailed(f"{name} has no length")
    return _Part(
        path=path,
        signature=signature,
        video_base=video_base,
        audio_base=audio_base,
        sample_rate=sample_rate,
        video=video,
        priming=[packet for packet in audio if _time(packet, packet.pts) < 0],
        sound=[packet for packet in audio if _time(packet, packet.pts) >= 0],
        first_pts=first_pts,
        video_length=end - first_pts,
    )


def _fit_sound(
    sound: list[av.Packet[Any]], start: int, picture_end: int, packet_ticks: int, *, last: bool
) -> list[av.Packet[Any]]:
    """The audio packets placed one after the other from ``start``; unless this is the ``last`` part,
    without a final packet that would run more than half a packet past the part's pictures."""
    kept = list(sound)
    while not last and len(kept) > 1 and start + len(kept) * packet_ticks - picture_end >= packet_ticks / 2:
        kept.pop()
    for index, packet in enumerate(kept):
        packet.pts = packet.dts = start + index * packet_ticks
        if not last or index < len(kept) - 1:
            packet.duration = packet_ticks
    return kept


def _remux(paths: Sequence[Path], target: Path) -> list[tuple[float, float]]:
    """Put the files' packets one after the other, nothing decoded; returns each file's span in seconds.

    Each file's video starts where the previous one's ended. Audio cannot be cut finer than an AAC
    packet (1024 samples), and a decoder plays every sample of every packet, whatever the timestamps
    say: a file's last packet, padded to full length, would push all later sound late, by up to 21 ms
    per file. So each file's audio follows on from where the previous file's decoded sound really
    ended, and a last packet that would leave the sound more than half a packet behind the picture is
    dropped: sound and picture stay within ±11 ms at every boundary. (A file whose sound stops well
    before its pictures leaves a gap in the timestamps instead.) Later files lose their AAC priming
    packet (it would overlap the previous file).
    """
    if not paths:
        raise StitchFailed("nothing to join")
    spans: list[tuple[float, float]] = []
    parts = iter(_read_part(path, number) for number, path in enumerate(paths))
    first = next(parts)
    if (first.signature["video codec"], first.signature["audio codec"]) != ("h264", "aac"):
        raise StitchFailed(f"part 1 ({first.path.name}) is not H.264 + AAC")
    video_base, audio_base = first.video_base, first.audio_base
    packet_ticks = round(Fraction(_AAC_FRAME_SAMPLES, first.sample_rate) / audio_base)
    with (
        av.open(str(paths[0])) as template,
        av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        video_out = out.add_stream_from_template(template.streams.video[0])
        audio_out = out.add_stream_from_template(template.streams.audio[0])
        video_end = 0
        audio_end: int | None = None
        last_dts: int | None = None
        for number, part in enumerate(itertools.chain([first], parts)):
            for name, value in part.signature.items():
                if value != first.signature[name]:
                    raise StitchFailed(
                        f"part {number + 1} ({part.path.name}) cannot be joined by stream copy: "
                        f"its {name} differs from part 1's"
                    )
            offset = video_end - part.first_pts
            for packet in part.video:
                packet.pts = _time(packet, packet.pts) + offset
                packet.dts = _time(packet, packet.dts) + offset
                packet.stream = video_out
            if last_dts is not None and _time(part.video[0], part.video[0].dts) <= last_dts:
                raise StitchFailed(f"part {number + 1} ({part.path.name}) would overlap the previous part's pictures")
            last_dts = max(_time(packet, packet.dts) for packet in part.video)
            start = video_end
            video_end += part.video_length
            picture_start, picture_end = (round(ticks * video_base / audio_base) for ticks in (start, video_end))

            if number == 0:
                priming = part.priming
                sound_start = _time(part.sound[0], part.sound[0].pts) if part.sound else 0
            else:
                priming = []
                follows_on = audio_end is not None and audio_end >= picture_start - packet_ticks / 2
                sound_start = audio_end if follows_on and audio_end is not None else picture_start
            sound = _fit_sound(part.sound, sound_start, picture_end, packet_ticks, last=number == len(paths) - 1)
            audio_end = sound_start + len(sound) * packet_ticks
            for packet in (*priming, *sound):
                packet.stream = audio_out

            timed = [(_time(packet, packet.dts) * video_base, packet) for packet in part.video]
            timed += [(_time(packet, packet.dts) * audio_base, packet) for packet in (*priming, *sound)]
            for _, packet in sorted(timed, key=lambda item: item[0]):
                out.mux(packet)
            spans.append((float(start * video_base), float(video_end * video_base)))
    return spans


# -- the whole job, in whichever process runs it ----------------------------------------------------


def _partial(output: Path) -> Path:
    """Where ``output`` is written until it is complete (hidden, and removed if the work fails)."""
    return output.with_name(f".{output.name}.partial")


def _usage() -> tuple[float, int]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, own.ru_maxrss * 1024


def stitch_in_this_process(request: StitchRequest) -> StitchResult:
    """The stitch itself, blocking. ``stitch`` runs this in a child process; call it directly only there."""
    if not request.segments:
        raise UserInputError("A short needs at least one clip.")
    if request.byte_budget <= 0:
        raise UserInputError("The upload limit must be more than 0 bytes.")
    cpu_before, _ = _usage()
    clips = [_probe(segment.clip) for segment in request.segments]
    for segment in request.segments:
        if segment.narration is not None and not segment.narration.is_file():
            raise StitchFailed(f"narration {segment.narration.name} is missing")
    output = request.output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(output)
    srt_path = output.with_suffix(".srt")
    plan = _plan(request, clips)
    copied = _can_copy(request, clips)
    bitrate: int | None = None
    encodes = 0
    cues = plan.cues
    try:
        if copied:
            try:
                spans = _remux([clip.path for clip in clips], partial)
            except (StitchFailed, av.FFmpegError):
                spans, copied = [], False
        if copied:
            cues = [
                Cue(span[0], span[1], _clean_caption(segment.text))
                for span, segment in zip(spans, request.segments, strict=True)
                if _clean_caption(segment.text)
            ]
            duration = spans[-1][1]
            copied = partial.stat().st_size <= request.byte_budget
        if not copied:
            duration = plan.duration_frames / request.fps
            bitrate = video_bitrate(request.byte_budget, duration)
            while True:
                encodes += 1
                _encode(request, plan, bitrate, partial)
                if partial.stat().st_size <= request.byte_budget:
                    break
                if encodes >= _MAX_ENCODES or bitrate * _RETRY_FACTOR < MIN_VIDEO_BITRATE:
                    raise StitchFailed(
                        f"output is {partial.stat().st_size} bytes, over the {request.byte_budget}-byte limit"
                    )
                bitrate = int(bitrate * _RETRY_FACTOR)
        os.replace(partial, output)
        srt_path.write_text(srt_text(cues), encoding="utf-8")
    except av.FFmpegError as exc:
        raise StitchFailed(f"FFmpeg failed: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    cpu_after, peak = _usage()
    return StitchResult(
        video=output,
        srt=srt_path,
        duration=duration,
        size=output.stat().st_size,
        stream_copied=copied,
        cues=tuple(cues),
        video_bitrate=bitrate,
        cpu_seconds=cpu_after - cpu_before,
        peak_rss_bytes=peak,
        encodes=encodes,
    )


def piece_in_this_process(request: PieceRequest) -> PieceResult:
    """One piece, blocking. ``encode_piece`` runs this in a child process; call it directly only there."""
    cpu_before, _ = _usage()
    segment = request.segment
    clip = _probe(segment.clip)
    if segment.narration is not None and not segment.narration.is_file():
        raise StitchFailed(f"narration {segment.narration.name} is missing")
    count = max(1, round(clip.duration * request.fps))
    width, height = frame_size(request.aspect, request.long_side)
    options = _x264_options(request.preset, request.video_bitrate, request.fps, fixed_gop=True)
    output = request.output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(output)
    try:
        with av.open(str(partial), "w", format="mp4") as out:
            streams = _add_streams(out, width, height, request.fps, options)
            _mux_segment(out, streams, segment, count, 0, request.fps, request.captions)
            for stream in streams:
                out.mux(stream.encode(None))
        os.replace(partial, output)
    except av.FFmpegError as exc:
        raise StitchFailed(f"FFmpeg failed on {segment.clip.name}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    cpu_after, peak = _usage()
    return PieceResult(
        path=output,
        duration=count / request.fps,
        size=output.stat().st_size,
        text=_clean_caption(segment.text),
        cpu_seconds=cpu_after - cpu_before,
        peak_rss_bytes=peak,
    )


def join_in_this_process(request: JoinRequest) -> StitchResult:
    """The join, blocking. ``join_pieces`` runs this in a child process; call it directly only there."""
    cpu_before, _ = _usage()
    paths = [piece.path if isinstance(piece, PieceResult) else piece for piece in request.pieces]
    output = request.output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(output)
    srt_path = output.with_suffix(".srt")
    try:
        spans = _remux(paths, partial)
        size = partial.stat().st_size
        if size > request.byte_budget:
            raise StitchFailed(f"joined pieces are {size} bytes, over the {request.byte_budget}-byte limit")
        os.replace(partial, output)
        cues = [
            Cue(start, end, text)
            for (start, end), text in zip(spans, map(_clean_caption, request.texts), strict=True)
            if text
        ]
        srt_path.write_text(srt_text(cues), encoding="utf-8")
    except (av.FFmpegError, OSError) as exc:
        raise StitchFailed(f"joining the pieces failed: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    cpu_after, peak = _usage()
    return StitchResult(
        video=output,
        srt=srt_path,
        duration=spans[-1][1],
        size=size,
        stream_copied=True,
        cues=tuple(cues),
        cpu_seconds=cpu_after - cpu_before,
        peak_rss_bytes=peak,
    )


# -- a clip's first picture -------------------------------------------------------------------------


def first_frame_jpeg(clip: Path, max_side: int = 320) -> bytes:
    """The clip's first picture as a small JPEG (a contact sheet's tile), upright, its longer side at most
    ``max_side`` (never enlarged).

    Blocking but quick: only the first picture is decoded.
    """
    try:
        with av.open(str(clip)) as container:
            if not container.streams.video:
                raise StitchFailed(f"{clip.name} has no video stream")
            stream = container.streams.video[0]
            frame = next(container.decode(stream), None)
            if frame is None:
                raise StitchFailed(f"{clip.name} has no pictures")
            image = Image.fromarray(frame.to_ndarray(format="rgb24"))
            rotation = frame.rotation
    except (av.FFmpegError, OSError) as exc:
        raise StitchFailed(f"cannot read {clip.name}: {exc}") from exc
    if rotation:
        image = image.rotate(rotation, expand=True)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=82)
    return buffer.getvalue()


# -- child processes --------------------------------------------------------------------------------


def _child(work: Callable[[Any], object], request: object, conn: multiprocessing.connection.Connection) -> None:
    exit_with_parent()
    with contextlib.suppress(OSError):
        os.nice(5)
    try:
        result: tuple[str, Any] = ("ok", work(request))
    except UserInputError as exc:
        result = ("input", exc.user_message)
    except StitchFailed as exc:
        result = ("failed", str(exc))
    except Exception as exc:
        result = ("failed", f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


_live: set[BaseProcess] = set()
_live_lock = threading.Lock()

_max_concurrent = 2
_slots: dict[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = {}


def configure_stitching(max_concurrent: int) -> None:
    """How many stitch children (stitches, pieces, joins) may run at once; each encodes with several
    threads, so more than the machine's cores only makes all of them slower. Call it at startup."""
    global _max_concurrent
    if max_concurrent < 1:
        raise ValueError("at least one stitch must be able to run")
    _max_concurrent = max_concurrent


def _slot() -> asyncio.Semaphore:
    """The running loop's semaphore (an asyncio primitive belongs to one loop), made on first use."""
    loop = asyncio.get_running_loop()
    with _live_lock:
        for closed in [other for other in _slots if other.is_closed()]:
            del _slots[closed]
        limit, semaphore = _slots.get(loop, (0, None))
        if semaphore is None or limit != _max_concurrent:
            semaphore = asyncio.Semaphore(_max_concurrent)
            _slots[loop] = (_max_concurrent, semaphore)
        return semaphore


def _context() -> Any:
    """forkserver, not fork: the bot runs threads and an event loop, which a fork copies mid-flight."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _end(process: BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(timeout=5)
    with _live_lock:
        _live.discard(process)


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _in_child(work: Callable[[Any], object], request: object, output: Path, name: str) -> object:
    """Run ``work(request)`` in a child process once a slot is free; the event loop only waits on a pipe.

    Cancelling the awaiting task kills the child at once and removes ``output``'s partial file.
    """
    async with _slot():
        context = _context()
        receiver, sender = context.Pipe(duplex=False)
        process: BaseProcess = context.Process(target=_child, args=(work, request, sender), name=name, daemon=True)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        try:
            with _live_lock:
                _live.add(process)
            await asyncio.to_thread(process.start)
            sender.close()
            loop.add_reader(receiver.fileno(), _settle, ready)
            try:
                await ready
            finally:
                loop.remove_reader(receiver.fileno())
            try:
                kind, payload = receiver.recv()
            except EOFError:
                process.join(timeout=5)
                raise StitchFailed(f"the {name} process ended with code {process.exitcode}") from None
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_end, process))
            with contextlib.suppress(FileNotFoundError):
                _partial(output).unlink()
            raise
        finally:
            receiver.close()
        await asyncio.to_thread(_end, process)
    if kind == "input":
        raise UserInputError(payload)
    if kind == "failed":
        raise StitchFailed(payload)
    return payload


async def stitch(request: StitchRequest) -> StitchResult:
    """Stitch the whole short in a child process (at most ``configure_stitching``'s number at once).

    Cancelling the awaiting task kills the child at once and leaves no partial output behind.
    """
    result = await _in_child(stitch_in_this_process, request, request.output, "reelwright-stitch")
    assert isinstance(result, StitchResult)
    return result


async def encode_piece(request: PieceRequest) -> PieceResult:
    """Encode one segment into its own MP4 in a child process, like ``stitch`` (killed on cancel)."""
    result = await _in_child(piece_in_this_process, request, request.output, "reelwright-piece")
    assert isinstance(result, PieceResult)
    return result


async def join_pieces(request: JoinRequest) -> StitchResult:
    """Join encoded pieces by stream copy into the short and its SRT, in a child process.

    Raises ``StitchFailed`` when the pieces cannot be joined (they differ, or one is unreadable) or the
    result is over ``byte_budget``: the caller then stitches the whole short with ``stitch``.
    """
    result = await _in_child(join_in_this_process, request, request.output, "reelwright-join")
    assert isinstance(result, StitchResult)
    return result


def stitch_pids() -> list[int]:
    """Process ids of the stitch children (stitches, pieces, joins) running now (tests, health page)."""
    with _live_lock:
        return [process.pid for process in _live if process.pid is not None]


def shutdown_stitches(timeout: float = 5.0) -> None:
    """Kill every running stitch, piece and join: on shutdown a half-made short is redone after restart,
    not waited for."""
    with _live_lock:
        running = list(_live)
    deadline = time.monotonic() + timeout
    for process in running:
        if process.is_alive():
            process.kill()
    for process in running:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        with _live_lock:
            _live.discard(process)
