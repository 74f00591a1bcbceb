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
from bot.core.storyboard import (
    BACKGROUND,
    CELL_HEIGHT,
    FRAME_BOX,
    FRAME_CELL_HEIGHT,
    FRAME_CELL_WIDTH,
    FRAME_LETTERBOX,
    HEADER,
    MARGIN,
    PALETTE,
    draw_storyboard,
    frame_box,
    frame_cell_origin,
    frames_sheet_or_none,
    grid,
    render_frames_sheet,
    render_storyboard,
    storyboard_worker_pids,
)
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


# -- the sheet with each clip's first frame ------------------------------------------------------------

RED, GREEN, BLUE = (220, 20, 20), (20, 170, 60), (30, 60, 200)
Colour = tuple[int, int, int]


def solid_jpeg(colour: Colour, size: tuple[int, int] = (320, 568)) -> bytes:
    """A clip's first frame as the short pipeline extracts it: a 9:16 JPEG unless told otherwise."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=90)
    return out.getvalue()


def near(pixel: object, colour: Colour, tolerance: int = 30) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def box_centre(index: int, columns: int) -> tuple[int, int]:
    left, top, right, bottom = frame_box(index, columns)
    return (left + right) // 2, (top + bottom) // 2


def open_rgb(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return image.convert("RGB")


def test_a_frames_sheet_of_six_clips_is_a_jpeg_sized_to_its_grid() -> None:
    frames = [solid_jpeg(colour) for colour in (RED, GREEN, BLUE, RED, GREEN, BLUE)]
    sheet = Image.open(io.BytesIO(render_frames_sheet(story(6), frames)))
    assert sheet.format == "JPEG"
    assert grid(6) == (3, 2)
    assert sheet.size == (
        MARGIN + 3 * (FRAME_CELL_WIDTH + MARGIN),
        HEADER + 2 * (FRAME_CELL_HEIGHT + MARGIN) + MARGIN,
    )


def test_each_cell_shows_its_own_frame() -> None:
    colours = [RED, GREEN, BLUE, RED, GREEN, BLUE]
    sheet = open_rgb(render_frames_sheet(story(6), [solid_jpeg(colour) for colour in colours]))
    for index, colour in enumerate(colours):
        assert near(sheet.getpixel(box_centre(index, 3)), colour), index
        left, top, right, bottom = frame_box(index, 3)
        # A 9:16 frame fills its 9:16 box: its corners are the frame, not letterbox.
        assert near(sheet.getpixel((left + 3, top + 3)), colour), index
        assert near(sheet.getpixel((right - 4, bottom - 4)), colour), index


def test_a_landscape_frame_is_fitted_not_stretched() -> None:
    """A 16:9 frame keeps its shape: full box width, letterboxed above and below."""
    sheet = open_rgb(render_frames_sheet(story(1), [solid_jpeg(GREEN, (1280, 720))]))
    left, top, right, bottom = frame_box(0, 1)
    frame_height = round(FRAME_BOX[0] * 720 / 1280)
    band_top = top + (FRAME_BOX[1] - frame_height) // 2
    assert near(sheet.getpixel(box_centre(0, 1)), GREEN)
    assert near(sheet.getpixel((left + 3, band_top + 4)), GREEN)
    assert near(sheet.getpixel((left + 3, top + 3)), FRAME_LETTERBOX)
    assert near(sheet.getpixel(((left + right) // 2, bottom - 4)), FRAME_LETTERBOX)
    assert near(sheet.getpixel(((left + right) // 2, band_top - 6)), FRAME_LETTERBOX)


def test_a_missing_clip_leaves_a_coloured_cell() -> None:
    sheet = open_rgb(render_frames_sheet(story(3), [solid_jpeg(RED), None, solid_jpeg(BLUE)]))
    left, top, _, _ = frame_box(1, 3)
    assert near(sheet.getpixel((left + 4, top + 4)), PALETTE[1])
    assert near(sheet.getpixel(box_centre(0, 3)), RED) and near(sheet.getpixel(box_centre(2, 3)), BLUE)


async def test_a_broken_frame_does_not_break_the_sheet(caplog: pytest.LogCaptureFixture) -> None:
    """Garbage, a truncated JPEG, a PNG: each of those cells falls back, the others show their frames."""
    red = solid_jpeg(RED)
    png = io.BytesIO()
    Image.new("RGB", (90, 160), GREEN).save(png, "PNG")
    frames = [b"\xff\xd8\xff\xe0 not a jpeg", red[: len(red) // 3], png.getvalue(), red]
    rendered = render_frames_sheet(story(4), frames)
    sheet = open_rgb(rendered)
    for index in range(3):
        left, top, _, _ = frame_box(index, 4)
        assert near(sheet.getpixel((left + 4, top + 4)), PALETTE[index]), index
    assert near(sheet.getpixel(box_centre(3, 4)), RED)
    assert await frames_sheet_or_none(story(4), frames) == rendered
    assert "segment(s) 1, 2, 3 of 'A dragon learns to fly' could not be read" in caplog.text


def test_long_narration_is_cut_inside_its_cell() -> None:
    """A narration far too long for a cell, and one word wider than a line: cut with "…", never
    drawn over the margin below or beside the cell."""
    long_story = story(1)
    long_story.segments[0].narration = "The storm hums a lullaby to the keeper. " * 40 + "Z" * 300
    sheet = open_rgb(render_frames_sheet(long_story, [solid_jpeg(RED)]))
    left, top = frame_cell_origin(0, 1)
    # JPEG rings a few pixels past the card's border (up to ~20 levels); ink would differ by ~200.
    for y in range(top + FRAME_CELL_HEIGHT + 2, sheet.height):
        assert all(near(sheet.getpixel((x, y)), BACKGROUND, 24) for x in range(sheet.width)), y
    for x in range(left + FRAME_CELL_WIDTH + 2, sheet.width):
        assert all(near(sheet.getpixel((x, y)), BACKGROUND, 24) for y in range(HEADER, sheet.height)), x

    lines = storyboard._wrap(long_story.segments[0].narration, 17, 220, 9)
    assert len(lines) == 9 and lines[-1].endswith("…")
    assert all(storyboard._width(line, 17) <= 220 for line in lines)
    wide = storyboard._wrap("Z" * 300, 17, 220, 9)
    assert len(wide) == 9 and all(storyboard._width(line, 17) <= 220 for line in wide)
    assert storyboard._wrap("Short and sweet.", 17, 220, 9) == ["Short and sweet."]


async def test_the_frames_sheet_is_drawn_in_a_worker_process(fresh_workers: None) -> None:
    frames = [solid_jpeg(RED), None, solid_jpeg(BLUE, (1080, 1920))]
    assert await frames_sheet_or_none(story(3), frames) == render_frames_sheet(story(3), frames)
    pids = storyboard_worker_pids()
    assert pids and os.getpid() not in pids


async def test_no_frames_sheet_for_an_empty_story_or_a_failed_drawing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert await frames_sheet_or_none(story(0), []) is None

    async def broken(story: object, frames: object) -> bytes:
        raise RuntimeError("Pillow fell over")

    monkeypatch.setattr(storyboard, "draw_frames", broken)
    assert await frames_sheet_or_none(story(2), [None, None]) is None
    assert "could not draw the frames sheet of 'A dragon learns to fly'" in caplog.text


def test_the_main_module_is_import_light() -> None:
    """Each worker imports the main module again: the ``reelwright`` script's must not pull the bot in."""
    probe = (
        "import sys, bot.__main__; print(sorted(m for m in ('bot.cli', 'bot.runtime', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
