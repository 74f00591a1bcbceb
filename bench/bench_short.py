"""The stitch of a 6-segment 9:16 short: CPU per output second, peak memory, and the stream-copy path.

What it measures: six 8 s 720×1280 24 fps clips (textured, moving pictures with a tone, made with PyAV
first, like Veo's output in size and codecs) stitched by ``services.stitch.stitch`` in its child process:

- captions on, a narration per segment (ducking and mixing), 50 MB budget (Telegram's limit):
  the child's CPU seconds per output second (goal ≤ 0.25), its peak RSS (goal ≤ 300 MB), wall time;
- captions off, no narration: the stream-copy path's wall time (goal ≤ 1 s).

Not measured here: the wall time from the last clip finished to the upload started (no /short
pipeline yet).

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_short.py
    .venv/bin/python bench/bench_short.py --segments 6 --seconds 8 --preset veryfast
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NARRATION = (
    "A lighthouse keeper counts the ships that never come.",
    "One night the storm knocks, shy and shivering.",
    "She lets it in and lights every lamp she owns.",
    "The storm has never seen its own shape before.",
    "By morning the sea is calm and the lamps are out.",
    "Now the storm visits every evening, just to talk.",
)


def make_clip(path: Path, seconds: float, number: int) -> None:
    """A 720×1280 24 fps H.264 + AAC clip whose texture scrolls, so the encoder has real work."""
    import av
    import numpy as np

    rng = np.random.default_rng(number)
    texture = rng.integers(0, 255, (1280 * 2 // 16, 720 // 16, 3), dtype=np.uint8)
    texture = texture.repeat(16, axis=0).repeat(16, axis=1)
    tint = np.array([(number * 40) % 255, 120, 200 - number * 20], dtype=np.uint16)
    fps = 24
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 720, 1280, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20"}
        audio = out.add_stream("aac", rate=48_000, layout="stereo")
        for index in range(round(seconds * fps)):
            top = (index * 6) % 1280
            picture = ((texture[top : top + 1280].astype(np.uint16) + tint) // 2).astype(np.uint8)
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


def make_narration(path: Path, seconds: float, number: int) -> None:
    """A speech-like signal (a tone switched on and off like syllables) standing in for TTS."""
    import av
    import numpy as np

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


async def run(segments: int, seconds: float, preset: str) -> None:
    from services.stitch import Segment, StitchRequest, stitch

    with tempfile.TemporaryDirectory(prefix="bench-short-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        voiced: list[Segment] = []
        plain: list[Segment] = []
        for number in range(segments):
            clip, voice = work / f"clip{number}.mp4", work / f"voice{number}.wav"
            make_clip(clip, seconds, number)
            make_narration(voice, seconds - 1.5, number)
            text = NARRATION[number % len(NARRATION)]
            voiced.append(Segment(clip, text, voice))
            plain.append(Segment(clip, text))
        print(f"made {segments} clips of {seconds:g} s 720x1280 in {time.perf_counter() - started:.1f} s")

        budget = 50 * 1024 * 1024
        for label, chosen, captions in (
            ("captions=on voice=narration", voiced, True),
            ("captions=off voice=none", plain, False),
        ):
            request = StitchRequest(
                tuple(chosen), work / "short.mp4", captions=captions, byte_budget=budget, preset=preset
            )
            wall = time.perf_counter()
            result = await stitch(request)
            wall = time.perf_counter() - wall
            per_second = result.cpu_seconds / result.duration
            print(
                f"{label:30s} stream_copy={result.stream_copied!s:5s} output={result.duration:.2f} s "
                f"size={result.size / 1_048_576:.1f} MB (budget {budget / 1_048_576:.0f} MB) "
                f"wall={wall:.2f} s cpu={result.cpu_seconds:.2f} s "
                f"cpu/output-s={per_second:.3f} peak_rss={result.peak_rss_bytes / 1_048_576:.0f} MB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--preset", default="veryfast")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    asyncio.run(run(args.segments, args.seconds, args.preset))


if __name__ == "__main__":
    main()
