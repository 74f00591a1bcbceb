"""The stitch of a 6-segment 9:16 short: CPU per output second, peak memory, and the stream-copy path.

What it measures: six 8 s 720×1280 24 fps clips (textured, moving pictures with a tone, made with PyAV
first, like Veo's output in size and codecs) stitched by ``services.stitch`` in its child processes:

- ``whole``: captions on, a narration per segment (ducking and mixing), 50 MB budget (Telegram's
  limit), the whole short in one ``stitch``: the child's CPU seconds per output second (goal ≤ 0.25),
  its peak RSS (goal ≤ 300 MB), wall time;
- ``copy``: captions off, no narration: the stream-copy path's wall time (goal ≤ 1 s);
- ``pieces``: the same short as ``whole`` made the incremental way: the first five pieces encoded (two
  at a time, as ``configure_stitching`` allows by default), then the last piece and the join, as when
  the last clip arrives after the others. Reported: the pieces' CPU seconds per output second (goal
  ≤ 0.25), the wall time of the last piece plus the join (the stitch's share of "last clip finished →
  upload started", goal ≤ 10 s), a piece child's peak RSS, the join's wall and CPU, the file size.

``--content natural`` makes clips closer to camera footage (sub-pixel pan and zoom, film grain, dearer to
decode) than the default scrolling blocks; ``--budget-mb 10`` (Discord's limit) makes the bitrate cap
bind, so that ``--psnr`` compares presets at the same file size.

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_short.py
    .venv/bin/python bench/bench_short.py --cases pieces --preset veryfast --preset superfast --repeat 3
    .venv/bin/python bench/bench_short.py --cases pieces --content natural --budget-mb 10 --psnr
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from services.stitch import Segment

ROOT = Path(__file__).resolve().parent.parent

NARRATION = (
    "A lighthouse keeper counts the ships that never come.",
    "One night the storm knocks, shy and shivering.",
    "She lets it in and lights every lamp she owns.",
    "The storm has never seen its own shape before.",
    "By morning the sea is calm and the lamps are out.",
    "Now the storm visits every evening, just to talk.",
)


def _blocks(number: int, count: int) -> Iterator[npt.NDArray[np.uint8]]:
    """Random 16-pixel blocks scrolling 6 pixels a frame: whole-pixel motion, cheap to decode."""
    rng = np.random.default_rng(number)
    texture = rng.integers(0, 255, (1280 * 2 // 16, 720 // 16, 3), dtype=np.uint8)
    texture = texture.repeat(16, axis=0).repeat(16, axis=1)
    tint = np.array([(number * 40) % 255, 120, 200 - number * 20], dtype=np.uint16)
    for index in range(count):
        top = (index * 6) % 1280
        yield ((texture[top : top + 1280].astype(np.uint16) + tint) // 2).astype(np.uint8)


def _natural(number: int, count: int) -> Iterator[npt.NDArray[np.uint8]]:
    """Soft colour clouds with finer detail, panned and zoomed by sub-pixel steps, with film grain: closer
    to camera footage (and to Veo's) than the blocks, and dearer to decode."""
    from PIL import Image

    rng = np.random.default_rng(100 + number)
    size = (1600, 2400)

    def field(scale: int, channels: int) -> npt.NDArray[np.float32]:
        small = (rng.random((size[1] // scale + 1, size[0] // scale + 1, channels)) * 255).astype(np.uint8)
        image = Image.fromarray(small.squeeze()).resize(size, Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.float32).reshape(size[1], size[0], channels) / 255

    colour = field(160, 3) * 0.8 + 0.1
    detail = field(40, 1) * 0.5 + field(10, 1) * 0.3 + field(3, 1) * 0.2
    texture = Image.fromarray(np.clip(colour * (0.55 + 0.9 * detail) * 255, 0, 255).astype(np.uint8))
    grain = [rng.normal(0, 2, (1280, 720, 1)).astype(np.int16) for _ in range(7)]
    for index in range(count):
        zoom = 1.0 + 0.15 * index / count
        left, top = 200 + 2.3 * index, 300 + 1.7 * index
        box = (left, top, left + 720 / zoom, top + 1280 / zoom)
        picture = texture.transform((720, 1280), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
        yield np.clip(np.asarray(picture, dtype=np.int16) + grain[index % len(grain)], 0, 255).astype(np.uint8)


CONTENT = {"blocks": _blocks, "natural": _natural}


def make_clip(path: Path, seconds: float, number: int, content: str = "blocks") -> None:
    """A 720×1280 24 fps H.264 + AAC clip of moving pictures (``content``), so the encoder has real work."""
    import av

    fps = 24
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 720, 1280, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20" if content == "blocks" else "16"}
        audio = out.add_stream("aac", rate=48_000, layout="stereo")
        for index, picture in enumerate(CONTENT[content](number, round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = np.arange(round(seconds * 48_000), dtype=np.float32) / 48_000
        tone = (0.2 * np.sin(2 * np.pi * (220 + 40 * number) * t)).astype(np.float32)
        for start in range(0, t.size, 1024):
            chunk = np.stack([tone[start : start + 1024]] * 2)
            sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
            sound.sample_rate, sound.pts = 48_000, start
            out.mux(audio.encode(sound))
        out.mux(audio.encode(None))


def psnr_top_half(output: Path, clips: list[Path]) -> float:
    """Luma PSNR of the short against its clips, over the top half of the picture (no captions there)."""
    import av

    def lumas(path: Path) -> Iterator[npt.NDArray[np.float32]]:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="gray")[:640].astype(np.float32)

    errors = [
        float(np.mean((made - source) ** 2))
        for made, source in zip(lumas(output), (luma for clip in clips for luma in lumas(clip)), strict=False)
    ]
    return float(10 * np.log10(255**2 / max(np.mean(errors), 1e-9)))


def make_narration(path: Path, seconds: float, number: int) -> None:
    """A speech-like signal (a tone switched on and off like syllables) standing in for TTS."""
    import av

    rate = 24_000
    t = np.arange(round(seconds * rate), dtype=np.float32) / rate
    syllables = (np.sin(2 * np.pi * 3 * t) > -0.2).astype(np.float32)
    voice = (0.3 * np.sin(2 * np.pi * (500 + 30 * number) * t) * syllables * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(voice.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


async def run_pieces(voiced: list[Segment], work: Path, budget: int, preset: str, psnr: bool) -> None:
    from services.stitch import JoinRequest, PieceRequest, StitchFailed, encode_piece, join_pieces, video_bitrate

    seconds = sum(_clip_seconds(segment.clip) for segment in voiced)
    bitrate = video_bitrate(budget, seconds, pieces=len(voiced))
    requests = [
        PieceRequest(segment, work / f"piece{number}.mp4", "9:16", True, bitrate, preset=preset)
        for number, segment in enumerate(voiced)
    ]
    wall = time.perf_counter()
    pieces = list(await asyncio.gather(*(encode_piece(request) for request in requests[:-1])))
    before_last = time.perf_counter() - wall
    last_started = time.perf_counter()
    pieces.append(await encode_piece(requests[-1]))
    last_piece = time.perf_counter() - last_started
    cpu = sum(piece.cpu_seconds for piece in pieces)
    duration = sum(piece.duration for piece in pieces)
    label = f"pieces {preset}"
    measured = (
        f"cpu={cpu:.2f} s cpu/output-s={cpu / duration:.3f} "
        f"piece peak_rss={max(piece.peak_rss_bytes for piece in pieces) / 1_048_576:.0f} MB "
        f"first {len(pieces) - 1} pieces wall={before_last:.2f} s"
    )
    join_started = time.perf_counter()
    try:
        joined = await join_pieces(
            JoinRequest(tuple(pieces), tuple(segment.text for segment in voiced), work / "pieces.mp4", budget)
        )
    except StitchFailed as exc:
        print(f"{label:30s} {measured} | join FAILED: {exc}")
        return
    join_wall = time.perf_counter() - join_started
    quality = f" psnr-y={psnr_top_half(joined.video, [s.clip for s in voiced]):.2f} dB" if psnr else ""
    print(
        f"{label:30s} output={joined.duration:.2f} s size={joined.size / 1_048_576:.2f} MB "
        f"(budget {budget / 1_048_576:.0f} MB){quality} {measured} | last piece={last_piece:.2f} s "
        f"+ join={join_wall:.2f} s (join cpu {joined.cpu_seconds:.2f} s, peak_rss {joined.peak_rss_bytes / 1_048_576:.0f} MB) = {last_piece + join_wall:.2f} s"
    )


def _clip_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float((stream.duration or 0) * (stream.time_base or 0))


async def run(args: argparse.Namespace, cases: list[str]) -> None:
    from services.stitch import Segment, StitchRequest, stitch

    with tempfile.TemporaryDirectory(prefix="bench-short-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        voiced: list[Segment] = []
        plain: list[Segment] = []
        for number in range(args.segments):
            clip, voice = work / f"clip{number}.mp4", work / f"voice{number}.wav"
            make_clip(clip, args.seconds, number, args.content)
            make_narration(voice, args.seconds - 1.5, number)
            text = NARRATION[number % len(NARRATION)]
            voiced.append(Segment(clip, text, voice))
            plain.append(Segment(clip, text))
        clips_size = sum(segment.clip.stat().st_size for segment in plain) / 1_048_576
        print(
            f"made {args.segments} {args.content} clips of {args.seconds:g} s 720x1280 ({clips_size:.1f} MB) "
            f"in {time.perf_counter() - started:.1f} s"
        )

        budget = round(args.budget_mb * 1024 * 1024)
        runs = [(case, preset) for case in cases for preset in (args.preset if case != "copy" else args.preset[:1])]
        for _ in range(args.repeat):
            for case, preset in runs:
                if case == "pieces":
                    await run_pieces(voiced, work, budget, preset, args.psnr)
                    continue
                chosen, captions = (voiced, True) if case == "whole" else (plain, False)
                label = f"whole {preset}" if case == "whole" else "copy (captions=off voice=none)"
                request = StitchRequest(
                    tuple(chosen), work / "short.mp4", captions=captions, byte_budget=budget, preset=preset
                )
                wall = time.perf_counter()
                result = await stitch(request)
                wall = time.perf_counter() - wall
                per_second = result.cpu_seconds / result.duration
                quality = ""
                if args.psnr and case == "whole":
                    quality = f" psnr-y={psnr_top_half(result.video, [s.clip for s in voiced]):.2f} dB"
                print(
                    f"{label:30s} stream_copy={result.stream_copied!s:5s} output={result.duration:.2f} s "
                    f"size={result.size / 1_048_576:.2f} MB (budget {budget / 1_048_576:.0f} MB){quality} "
                    f"wall={wall:.2f} s cpu={result.cpu_seconds:.2f} s "
                    f"cpu/output-s={per_second:.3f} peak_rss={result.peak_rss_bytes / 1_048_576:.0f} MB"
                )


def main() -> None:
    from services.stitch import DEFAULT_PRESET

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--preset",
        action="append",
        help=f"x264 preset, optionally :key=value options; repeat to compare (default {DEFAULT_PRESET})",
    )
    parser.add_argument("--cases", default="whole,copy,pieces", help="comma-separated: whole, copy, pieces")
    parser.add_argument("--content", choices=sorted(CONTENT), default="blocks", help="what the clips show")
    parser.add_argument("--budget-mb", type=float, default=50.0, help="the upload limit (10 for Discord)")
    parser.add_argument("--psnr", action="store_true", help="also report the output's luma PSNR")
    parser.add_argument("--repeat", type=int, default=1, help="run each case this many times (the machine is noisy)")
    args = parser.parse_args()
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    if unknown := set(cases) - {"whole", "copy", "pieces"}:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    args.preset = args.preset or [DEFAULT_PRESET]
    asyncio.run(run(args, cases))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
