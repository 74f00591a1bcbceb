"""Storyboard contact sheets: CPU per sheet, and what the worker processes cost.

What it measures: the CPU of drawing one five-segment sheet in this process (``render_storyboard``);
then N sheets requested at once through ``draw_storyboard`` (the worker processes the bots use):
wall time, the workers' CPU per sheet, their peak RSS. The same for the frames sheet a finished
short gets (``render_frames_sheet``, ``frames_sheet_or_none``): six segments, each with a 320×568
JPEG first frame (detailed, about as costly to decode as a real one; solid colours would flatter).

This module imports nothing of the bot at the top, like the ``reelwright`` script (whose module is
``bot/__main__.py``): a worker process imports the main module again, so the RSS printed here is
what a worker costs under ``reelwright``. (The Telegram and Discord benches report bigger worker
RSS because their workers import those bench scripts.)

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_storyboard.py            # N = 200
    .venv/bin/python bench/bench_storyboard.py --n 1000
    .venv/bin/python bench/bench_storyboard.py --sheet frames    # only the frames sheet; --sheet story
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.story import Story

ROOT = Path(__file__).resolve().parent.parent


def sample_story() -> Story:
    """The five-segment story the storyboard figures are measured on (Telegram bench too)."""
    from services.story import Story, StorySegment

    return Story(
        title="A shy lighthouse keeper befriends a storm",
        idea="a shy lighthouse keeper befriends a storm that is afraid of the dark",
        segments=[
            StorySegment(
                number=i,
                narration="The keeper climbs the spiral stairs while the storm hums a lullaby outside.",
                visual_prompt="wide shot, lighthouse at night, rain, warm lantern light",
                duration_seconds=8,
            )
            for i in range(1, 6)
        ],
    )


FRAME_SIZE = (320, 568)
FRAME_COUNT = 6


def sample_frames() -> list[bytes | None]:
    """Six 320×568 first frames: a Mandelbrot set over colour gradients, JPEG at quality 85, each
    its own picture (no decoder cache helps)."""
    import io

    from PIL import Image

    frames: list[bytes | None] = []
    width, height = FRAME_SIZE
    for index in range(FRAME_COUNT):
        shift = index * 0.15
        detail = Image.effect_mandelbrot(FRAME_SIZE, (-2.2 + shift, -1.6, 1.0 + shift, 1.6), 60 + 10 * index)
        across = Image.linear_gradient("L").resize(FRAME_SIZE).rotate(90 * index, expand=False)
        down = Image.linear_gradient("L").resize(FRAME_SIZE)
        out = io.BytesIO()
        Image.merge("RGB", (detail, across, down)).save(out, "JPEG", quality=85)
        frames.append(out.getvalue())
    assert all(frame is not None and Image.open(io.BytesIO(frame)).size == (width, height) for frame in frames)
    return frames


def sample_short_story() -> Story:
    """``sample_story`` with six segments, one per frame."""
    from services.story import Story

    story = sample_story()
    segments = [segment.model_copy(update={"number": number}) for number, segment in enumerate(story.segments * 2, 1)]
    return Story(title=story.title, idea=story.idea, segments=segments[:FRAME_COUNT])


def frames_sheet_cpu_ms(samples: int = 50) -> float:
    """CPU of drawing one frames sheet (six 320×568 frames) in this process."""
    import time

    from bot.core.storyboard import render_frames_sheet

    story, frames = sample_short_story(), sample_frames()
    render_frames_sheet(story, frames)  # fonts, glyphs and cell cards cached
    before = time.process_time()
    for _ in range(samples):
        render_frames_sheet(story, frames)
    return (time.process_time() - before) * 1000 / samples


def sheet_cpu_ms(samples: int = 50) -> float:
    """CPU of drawing one sheet of ``sample_story`` in this process."""
    import time

    from bot.core.storyboard import render_storyboard

    story = sample_story()
    render_storyboard(story)  # fonts and glyphs cached
    before = time.process_time()
    for _ in range(samples):
        render_storyboard(story)
    return (time.process_time() - before) * 1000 / samples


def main() -> int:
    import asyncio
    import time
    from collections.abc import Awaitable, Callable

    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from bench_story import storyboard_workers_cpu, storyboard_workers_cpu_since, storyboard_workers_peak_rss_mb

    from bot.core import storyboard

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sheets requested at once")
    parser.add_argument("--sheet", choices=("story", "frames", "both"), default="both", help="which sheet to measure")
    args = parser.parse_args()
    story = sample_story()
    short, frames = sample_short_story(), sample_frames()

    async def through_workers(draw: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
        await draw()  # start the workers
        cpu0 = storyboard_workers_cpu()
        started = time.perf_counter()
        await asyncio.gather(*(draw() for _ in range(args.n)))
        wall = time.perf_counter() - started
        cpu = storyboard_workers_cpu_since(cpu0)
        rss = storyboard_workers_peak_rss_mb()
        storyboard.shutdown_storyboard_workers()
        return wall, cpu * 1000 / args.n, rss

    workers = storyboard.storyboard_worker_count()
    if args.sheet in ("story", "both"):
        sheet = storyboard.render_storyboard(story)
        in_process_ms = sheet_cpu_ms()
        wall, worker_ms, rss = asyncio.run(through_workers(lambda: storyboard.draw_storyboard(story)))
        print(f"one 5-segment sheet: {len(sheet) / 1024:.0f} KB JPEG, {in_process_ms:.2f} ms CPU drawn in this process")
        print(
            f"{args.n} sheets at once through {workers} worker process(es): "
            f"{wall:.2f} s wall, {worker_ms:.2f} ms worker CPU per sheet, workers' peak RSS {rss:.1f} MB"
        )
    if args.sheet in ("frames", "both"):
        frames_sheet = storyboard.render_frames_sheet(short, frames)
        frames_kb = sum(len(frame or b"") for frame in frames) / 1024
        in_process_ms = frames_sheet_cpu_ms()
        wall, worker_ms, rss = asyncio.run(through_workers(lambda: storyboard.frames_sheet_or_none(short, frames)))
        print(
            f"one frames sheet ({FRAME_COUNT} × {FRAME_SIZE[0]}×{FRAME_SIZE[1]} frames, {frames_kb:.0f} KB in): "
            f"{len(frames_sheet) / 1024:.0f} KB JPEG, {in_process_ms:.2f} ms CPU drawn in this process"
        )
        print(
            f"{args.n} frames sheets at once through {workers} worker process(es): "
            f"{wall:.2f} s wall, {worker_ms:.2f} ms worker CPU per sheet, workers' peak RSS {rss:.1f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
