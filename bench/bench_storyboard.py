"""Storyboard contact sheets: CPU per sheet, and what the worker processes cost.

What it measures: the CPU of drawing one five-segment sheet in this process (``render_storyboard``);
then N sheets requested at once through ``draw_storyboard`` (the worker processes the bots use):
wall time, the workers' CPU per sheet, their peak RSS.

This module imports nothing of the bot at the top, like the ``reelwright`` script (whose module is
``bot/__main__.py``): a worker process imports the main module again, so the RSS printed here is
what a worker costs under ``reelwright``. (The Telegram and Discord benches report bigger worker
RSS because their workers import those bench scripts.)

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_storyboard.py            # N = 200
    .venv/bin/python bench/bench_storyboard.py --n 1000
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

    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from bench_story import storyboard_workers_cpu, storyboard_workers_cpu_since, storyboard_workers_peak_rss_mb

    from bot.core import storyboard

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sheets requested at once")
    args = parser.parse_args()
    story = sample_story()
    sheet = storyboard.render_storyboard(story)
    in_process_ms = sheet_cpu_ms()

    async def through_workers() -> tuple[float, float, float]:
        await storyboard.draw_storyboard(story)  # start the workers
        cpu0 = storyboard_workers_cpu()
        started = time.perf_counter()
        await asyncio.gather(*(storyboard.draw_storyboard(story) for _ in range(args.n)))
        wall = time.perf_counter() - started
        cpu = storyboard_workers_cpu_since(cpu0)
        rss = storyboard_workers_peak_rss_mb()
        storyboard.shutdown_storyboard_workers()
        return wall, cpu * 1000 / args.n, rss

    wall, worker_ms, rss = asyncio.run(through_workers())
    print(f"one 5-segment sheet: {len(sheet) / 1024:.0f} KB JPEG, {in_process_ms:.2f} ms CPU drawn in this process")
    print(
        f"{args.n} sheets at once through {storyboard.storyboard_worker_count()} worker process(es): "
        f"{wall:.2f} s wall, {worker_ms:.2f} ms worker CPU per sheet, workers' peak RSS {rss:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
