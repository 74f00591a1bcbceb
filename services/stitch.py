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
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import threading
import time
from collections.abc import Iterator, Sequence
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
    "Cue",
    "Segment",
    "StitchFailed",
    "StitchRequest",
    "StitchResult",
    "frame_size",
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
    preset: str = "veryfast"


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


def video_bitrate(byte_budget: int, seconds: float, audio_bitrate: int = AUDIO_BITRATE) -> int:
    """The H.264 bitrate that keeps ``seconds`` of video plus AAC audio under ``byte_budget`` bytes.

    The budget loses a margin and a fixed overhead for the container; the audio's share is reserved;
    one more second of video is kept back because the rate control (a one-second buffer) may run
    that far ahead of its average.
    """
    if seconds <= 0:
        raise ValueError("a short lasts more than 0 seconds")
    usable_bits = (byte_budget * (1 - BUDGET_MARGIN) - FIXED_OVERHEAD_BYTES) * 8
    video_bits = usable_bits - audio_bitrate * 1.05 * seconds
    bitrate = int(video_bits / (seconds + 1))
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


def _blend(frame: av.VideoFrame, overlay: _Overlay) -> av.VideoFrame:
    """``frame`` (yuv420p) with the caption blended in; only the caption's rows are touched."""
    data = frame.to_ndarray()
    height, width = frame.height, frame.width
    y = data[:height]
    u = data[height : height + height // 4].reshape(height // 2, width // 2)
    v = data[height + height // 4 :].reshape(height // 2, width // 2)
    for index, top, bottom, plane_width, premultiplied, inverse_alpha in overlay.planes:
        plane = (y, u, v)[index]
        region = plane[top:bottom, :plane_width]
        region[...] = ((region * inverse_alpha + premultiplied + 127) // 255).astype(np.uint8)
    out = av.VideoFrame.from_ndarray(data, format="yuv420p")
    out.pts = frame.pts
    return out


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
    if width <= 1:
        return values
    kernel = np.ones(width, dtype=np.float32) / width
    smoothed: npt.NDArray[np.float32] = np.convolve(values, kernel, mode="same").astype(np.float32)
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
    speaking = np.minimum(1.0, np.convolve(speaking, np.ones(2 * hold + 1, dtype=np.float32), mode="same"))
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


def _segment_frames(path: Path, count: int, width: int, height: int, fps: int) -> Iterator[av.VideoFrame]:
    """Exactly ``count`` frames: the clip's, the last one held if the clip runs short."""
    produced = 0
    last: av.VideoFrame | None = None
    for frame in _clip_frames(path, width, height, fps):
        if produced >= count:
            break
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


def _encode(request: StitchRequest, plan: _Plan, bitrate: int, target: Path) -> None:
    width, height = frame_size(request.aspect, request.long_side)
    fps = request.fps
    with av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        frame_time = Fraction(1, fps)
        video.codec_context.time_base = frame_time
        video.options = {
            "preset": request.preset,
            "crf": str(CRF),
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "g": str(fps * 2),
            "profile": "high",
        }
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.bit_rate = AUDIO_BITRATE
        frame_index = 0
        for clip, count, segment in zip(plan.clips, plan.frame_counts, request.segments, strict=True):
            first_sample = round(frame_index / fps * AUDIO_RATE)
            samples = round((frame_index + count) / fps * AUDIO_RATE) - first_sample
            sound = _decode_audio(clip.path, samples)
            if segment.narration is not None:
                sound = _duck_and_mix(sound, _decode_audio(segment.narration, samples))
            audio_frames = _audio_frames(sound, first_sample)
            pending = next(audio_frames, None)
            overlay = _overlay(_clean_caption(segment.text), width, height) if request.captions else None
            for picture in _segment_frames(clip.path, count, width, height, fps):
                frame = _blend(picture, overlay) if overlay is not None else picture
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
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


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


def _copy(clips: list[_ClipInfo], target: Path) -> list[tuple[float, float]]:
    """Remux the clips' packets in order; each clip starts where the previous one's video ended.

    Later clips lose their audio's priming packet (negative time): it would overlap the previous clip.
    """
    spans: list[tuple[float, float]] = []
    start = 0.0
    with (
        av.open(str(clips[0].path)) as first,
        av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        video_out = out.add_stream_from_template(first.streams.video[0])
        audio_out = out.add_stream_from_template(first.streams.audio[0])
        for number, clip in enumerate(clips):
            with av.open(str(clip.path)) as container:
                streams = (container.streams.video[0], container.streams.audio[0])
                for packet in container.demux(streams):
                    if packet.dts is None or packet.pts is None or packet.time_base is None:
                        continue
                    offset = round(start / packet.time_base)
                    if packet.stream.type == "audio" and number > 0 and packet.pts < 0:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = video_out if packet.stream.type == "video" else audio_out
                    out.mux(packet)
            spans.append((start, start + clip.duration))
            start += clip.duration
    return spans


# -- the whole job, in whichever process runs it ----------------------------------------------------


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
    partial = output.with_name(f".{output.name}.partial")
    srt_path = output.with_suffix(".srt")
    plan = _plan(request, clips)
    copied = _can_copy(request, clips)
    bitrate: int | None = None
    encodes = 0
    cues = plan.cues
    try:
        if copied:
            spans = _copy(clips, partial)
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


def _child(request: StitchRequest, conn: multiprocessing.connection.Connection) -> None:
    exit_with_parent()
    with contextlib.suppress(OSError):
        os.nice(5)
    try:
        result: tuple[str, Any] = ("ok", stitch_in_this_process(request))
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


async def stitch(request: StitchRequest) -> StitchResult:
    """Stitch in a child process; the event loop only waits on a pipe.

    Cancelling the awaiting task kills the child at once and leaves no partial output behind.
    """
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    process: BaseProcess = context.Process(target=_child, args=(request, sender), name="reelwright-stitch", daemon=True)
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
            raise StitchFailed(f"the stitch process ended with code {process.exitcode}") from None
    except BaseException:
        await asyncio.shield(asyncio.to_thread(_end, process))
        with contextlib.suppress(FileNotFoundError):
            request.output.with_name(f".{request.output.name}.partial").unlink()
        raise
    finally:
        receiver.close()
    await asyncio.to_thread(_end, process)
    if kind == "input":
        raise UserInputError(payload)
    if kind == "failed":
        raise StitchFailed(payload)
    assert isinstance(payload, StitchResult)
    return payload


def stitch_pids() -> list[int]:
    """Process ids of the stitches running now (for tests and the health page)."""
    with _live_lock:
        return [process.pid for process in _live if process.pid is not None]


def shutdown_stitches(timeout: float = 5.0) -> None:
    """Kill every running stitch: on shutdown a half-made short is redone after restart, not waited for."""
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
