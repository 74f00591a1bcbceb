"""The storyboard contact sheet is a real PNG sized to the story."""

from __future__ import annotations

import io

from PIL import Image

from bot.core.storyboard import CELL_HEIGHT, render_storyboard
from services.story import Story, StorySegment


def story(count: int) -> Story:
    segments = [
        StorySegment(number=i + 1, narration=f"Line {i} <b>&amp; @everyone", visual_prompt="shot", duration_seconds=4)
        for i in range(count)
    ]
    return Story(title="A dragon learns to fly", idea="x", segments=segments)


def test_storyboard_is_a_jpeg_with_a_row_per_four_segments() -> None:
    small = Image.open(io.BytesIO(render_storyboard(story(4))))
    large = Image.open(io.BytesIO(render_storyboard(story(9))))
    assert small.format == large.format == "JPEG"
    assert large.height - small.height == 2 * (CELL_HEIGHT + 16)


def test_a_sixty_plus_story_is_capped() -> None:
    capped = Image.open(io.BytesIO(render_storyboard(story(70))))
    full = Image.open(io.BytesIO(render_storyboard(story(60))))
    assert capped.size == full.size
