"""Discord's message limits, checked on the layout alone (no network)."""

from __future__ import annotations

import json

import discord

from bot.core.replies import Media, Reply
from bot.discord.buttons import press_to_invocation, story_view
from bot.discord.messages import (
    CONTENT_LIMIT,
    EMBED_FIELDS_LIMIT,
    EMBED_TOTAL_LIMIT,
    FIELD_VALUE_LIMIT,
    idea_from_embed,
    render_reply,
    segment_from_embed,
    story_embed,
)
from services.story import Story, StorySegment


def make_story(segments: int, narration: str = "A line of narration.", idea: str = "a dragon learns to fly") -> Story:
    return Story(
        title="The Dragon",
        idea=idea,
        segments=[
            StorySegment(number=n, narration=narration, visual_prompt=f"shot {n}", duration_seconds=6)
            for n in range(1, segments + 1)
        ],
    )


def test_a_huge_story_fits_one_embed_and_says_it_was_cut() -> None:
    embed, overflow = story_embed(make_story(40, narration="long " * 400))
    assert overflow
    assert len(embed.fields) <= EMBED_FIELDS_LIMIT
    assert all(len(f.value or "") <= FIELD_VALUE_LIMIT for f in embed.fields)
    assert len(embed) <= EMBED_TOTAL_LIMIT


def test_the_embed_carries_what_buttons_need() -> None:
    embed, overflow = story_embed(make_story(3))
    assert not overflow
    assert segment_from_embed(embed, 2) == ("shot 2", 6)
    assert segment_from_embed(embed, 9) is None
    assert idea_from_embed(embed) == "a dragon learns to fly"


def test_button_presses_become_core_invocations() -> None:
    embed, _ = story_embed(make_story(3))
    message = discord.Object(id=1)
    message.embeds = [embed]  # type: ignore[attr-defined]
    assert press_to_invocation("video", "2", message) == ("video", {"prompt": "shot 2", "duration": "6"})  # type: ignore[arg-type]
    assert press_to_invocation("video", "2", None) == ("video", {"segment": 2})
    assert press_to_invocation("thumb", "", message) == ("thumbnail", {"title": "The Dragon"})  # type: ignore[arg-type]
    assert press_to_invocation("regen", "story.3", message) == (  # type: ignore[arg-type]
        "story",
        {"idea": "a dragon learns to fly", "segments": 3},
    )
    assert press_to_invocation("regen", "story.3", None) == ("story", {})


def test_the_view_has_at_most_eight_video_buttons_and_valid_rows() -> None:
    view = story_view("longstory", Reply(blocks=[], result=make_story(30)))
    assert view is not None
    labels = [item.item.label for item in view.children]  # type: ignore[attr-defined]
    assert labels[-2:] == ["Thumbnail", "Regenerate"]
    assert len(labels) == 10
    assert all(len(item.custom_id) <= 100 for item in view.children)  # type: ignore[attr-defined]
    assert story_view("story", Reply(blocks=["x"])) is None


async def test_files_over_the_limit_become_a_note_and_the_rest_is_packed() -> None:
    reply = Reply(
        blocks=["here"],
        media=[
            Media("image", b"a" * 600, "a.png"),
            Media("image", b"b" * 600, "b.png"),
            Media("video", b"c" * 2000, "big.mp4"),
        ],
    )
    messages = await render_reply(reply, upload_limit=1000)
    assert [[f.filename for f in m.files] for m in messages] == [["a.png"], ["b.png"]]
    assert "big.mp4" in (messages[0].content or "")
    assert "upload limit" in (messages[0].content or "")


async def test_long_text_is_split_within_the_content_limit() -> None:
    blocks = [f"{n}. " + "x" * 900 for n in range(5)]
    messages = await render_reply(Reply(blocks=blocks))
    assert 1 < len(messages) <= 3
    assert all(len(m.content or "") <= CONTENT_LIMIT for m in messages)


async def test_an_overflowing_story_gets_its_json_once() -> None:
    story = make_story(30)
    messages = await render_reply(Reply(blocks=[], result=story))
    files = [f.filename for m in messages for f in m.files]
    assert files == ["storyboard.jpg", "story.json"]
    document = next(f for m in messages for f in m.files if f.filename == "story.json")
    assert len(json.loads(document.data)["segments"]) == 30
    with_document = Reply(blocks=[], result=story, media=[Media("document", b"{}", "story.json")])
    files = [f.filename for m in await render_reply(with_document) for f in m.files]
    assert files == ["storyboard.jpg", "story.json"]
