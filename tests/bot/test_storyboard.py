"""The storyboard contact sheet: a real JPEG sized to the story, drawn in worker processes that
neither lose a sheet when one dies nor outlive the bot."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from bot.core import storyboard
from bot.core.storyboard import CELL_HEIGHT, draw_storyboard, grid, render_storyboard, storyboard_worker_pids
from services.story import Story, StorySegment

ROOT = Path(__file__).resolve().parents[2]


def story(count: int) -> Story:
    segments = [
        StorySegment(number=i + 1, narration=f"Line {i} <b>&amp; @everyone", visual_prompt="shot", duration_seconds=4)
        for i in range(count)
    ]
    return Story(title="A dragon learns to fly", idea="x", segments=segments)


@pytest.fixture
def fresh_workers() -> Iterator[None]:
    storyboard.shutdown_storyboard_workers()
    yield
    storyboard.shutdown_storyboard_workers()


async def process_exit(pid: int, limit: float = 30.0) -> None:
    """Wait for a process that is not our child to end (a pidfd becomes readable when it does)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(fd, ended.set_result, None)
    try:
        await asyncio.wait_for(ended, limit)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def test_storyboard_is_a_jpeg_with_a_row_per_four_segments() -> None:
    small = Image.open(io.BytesIO(render_storyboard(story(4))))
    large = Image.open(io.BytesIO(render_storyboard(story(9))))
    assert small.format == large.format == "JPEG"
    assert large.height - small.height == 2 * (CELL_HEIGHT + 16)


def test_cells_are_spread_evenly_over_the_rows() -> None:
    assert grid(1) == (1, 1)
    assert grid(4) == (4, 1)
    assert grid(5) == (3, 2)  # not 4 + 1 with three empty cells
    assert grid(9) == (3, 3)
    assert grid(60) == (4, 15)
    five = Image.open(io.BytesIO(render_storyboard(story(5))))
    four = Image.open(io.BytesIO(render_storyboard(story(4))))
    assert five.width < four.width


def test_a_long_title_is_cut_to_the_room_a_narrow_sheet_has() -> None:
    """On a one-cell sheet a long title must fit its width, or it runs under the summary and off the image."""
    title = "A very long title about a dragon who learns to fly over the misty mountains"
    fitted = storyboard._fit(title, 30, 200)
    assert fitted.endswith("…") and title.startswith(fitted[:-1].rstrip())
    assert storyboard._width(fitted, 30) <= 200
    assert storyboard._fit("Short", 30, 200) == "Short"
    sheet = Image.open(io.BytesIO(render_storyboard(story(1))))
    assert sheet.width == 16 + storyboard.CELL_WIDTH + 16


def test_a_sixty_plus_story_is_capped() -> None:
    capped = Image.open(io.BytesIO(render_storyboard(story(70))))
    full = Image.open(io.BytesIO(render_storyboard(story(60))))
    assert capped.size == full.size


async def test_the_sheet_is_drawn_in_a_worker_process(fresh_workers: None) -> None:
    drawn = await draw_storyboard(story(5))
    assert drawn == render_storyboard(story(5))  # the same pixels, the same JPEG
    pids = storyboard_worker_pids()
    assert pids and os.getpid() not in pids
    storyboard.shutdown_storyboard_workers()
    assert storyboard_worker_pids() == []
    for pid in pids:
        await process_exit(pid)


async def test_a_killed_worker_loses_no_sheet_and_is_replaced(
    fresh_workers: None, caplog: pytest.LogCaptureFixture
) -> None:
    await draw_storyboard(story(2))
    (victim,) = storyboard_worker_pids()[:1]
    os.kill(victim, signal.SIGKILL)
    await process_exit(victim)
    assert await draw_storyboard(story(3)) == render_storyboard(story(3))
    assert "a storyboard worker died" in caplog.text
    assert await draw_storyboard(story(4)) == render_storyboard(story(4))
    assert storyboard_worker_pids() and victim not in storyboard_worker_pids()


async def test_workers_that_cannot_start_leave_drawing_to_threads(
    fresh_workers: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers that die on start (here: their initializer exits) must not cost a failed start per story."""
    monkeypatch.setattr(storyboard, "exit_with_parent", sys.exit)
    for count in range(1, storyboard.MAX_POOLS_BROKEN_BEFORE_DRAWING + 3):
        assert await draw_storyboard(story(count)) == render_storyboard(story(count))
    assert "failed to start 3 times; drawing in threads" in caplog.text
    assert caplog.text.count("a storyboard worker died") == storyboard.MAX_POOLS_BROKEN_BEFORE_DRAWING
    assert storyboard_worker_pids() == []


async def test_workers_end_when_the_bot_is_killed() -> None:
    """A SIGKILLed bot (OOM, a hard deploy) must not leave its drawing processes behind."""
    script = textwrap.dedent(
        """
        import asyncio, os, signal
        from bot.core.storyboard import draw_storyboard, storyboard_worker_pids
        from services.story import Story, StorySegment

        async def main():
            segment = StorySegment(number=1, narration="n", visual_prompt="v", duration_seconds=4)
            await draw_storyboard(Story(title="t", idea="i", segments=[segment]))
            print(*storyboard_worker_pids(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            asyncio.run(main())
        """
    )
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert bot.stdout is not None
    line = await asyncio.wait_for(bot.stdout.readline(), 60)
    workers = [int(pid) for pid in line.split()]
    assert workers
    assert await bot.wait() == -signal.SIGKILL
    for pid in workers:
        await process_exit(pid)  # raises TimeoutError if a worker outlives the bot


def test_the_main_module_is_import_light() -> None:
    """Each worker imports the main module again: the ``reelwright`` script's must not pull the bot in."""
    probe = (
        "import sys, bot.__main__; print(sorted(m for m in ('bot.cli', 'bot.runtime', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
