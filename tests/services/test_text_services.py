"""Meme, free-form copy and trend services against the fake OpenRouter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.errors import UserInputError
from services.config import ServiceConfig, configure_services
from services.free_content import generate_free_content
from services.meme import generate_meme_segments
from services.trends import generate_trending_ideas
from tests.conftest import TEST_SERVICE_CONFIG
from tests.fakes import FakeGenAI, FakeOpenRouter

Upstreams = tuple[FakeOpenRouter, FakeGenAI]


async def test_meme_has_setup_punchline_caption_visual(upstreams: Upstreams) -> None:
    text, _ = upstreams
    meme = await generate_meme_segments("mondays at a startup", count=2, tone="dry")
    assert len(meme.segments) == 2
    assert all(seg.setup and seg.punchline and seg.caption and seg.visual_prompt for seg in meme.segments)
    prompt = text.chat_requests[0].json["messages"][-1]["content"]
    assert "Tone: dry" in prompt and "exactly 2 segments" in prompt


async def test_each_text_service_uses_its_own_model(upstreams: Upstreams) -> None:
    text, _ = upstreams
    configure_services(ServiceConfig(meme_model="m/meme", content_model="m/content", trends_model="m/trends"))
    await generate_meme_segments("cats")
    await generate_free_content("ramen", kind="hashtags")
    await generate_trending_ideas("cooking")
    assert [r.json["model"] for r in text.chat_requests] == ["m/meme", "m/content", "m/trends"]
    configure_services(TEST_SERVICE_CONFIG)


async def test_free_content_known_and_unknown_kinds(upstreams: Upstreams) -> None:
    text, _ = upstreams
    hashtags = await generate_free_content("a vegan ramen recipe", kind="Hashtags")
    assert hashtags.kind == "hashtags" and hashtags.content
    assert "hashtags" in text.chat_requests[0].json["messages"][-1]["content"]
    limerick = await generate_free_content("a cat", kind="limerick")
    assert limerick.kind == "limerick"
    assert "this kind: limerick" in text.chat_requests[1].json["messages"][-1]["content"]


async def test_trends_are_dated_and_counted(upstreams: Upstreams) -> None:
    text, _ = upstreams
    report = await generate_trending_ideas("indie game dev", count=4, today=datetime(2026, 11, 30, tzinfo=UTC))
    assert len(report.ideas) == 4
    assert all(idea.hook and idea.angle and idea.why_now for idea in report.ideas)
    assert "30 November 2026" in text.chat_requests[0].json["messages"][-1]["content"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: generate_meme_segments(""),
        lambda: generate_meme_segments("cats", count=6),
        lambda: generate_free_content("   "),
        lambda: generate_free_content("ok", kind=""),
        lambda: generate_trending_ideas("x" * 201),
        lambda: generate_trending_ideas("cooking", count=0),
    ],
    ids=["empty-meme", "meme-count", "empty-brief", "empty-kind", "long-niche", "zero-ideas"],
)
async def test_bad_input_makes_no_paid_call(upstreams: Upstreams, call) -> None:  # type: ignore[no-untyped-def]
    text, _ = upstreams
    with pytest.raises(UserInputError):
        await call()
    assert text.chat_requests == []


def test_clean_prompt_drops_what_the_store_cannot_hold_and_keeps_joiners() -> None:
    from services.prompts import clean_prompt

    dirty = "\x00👩\u200d💻\x07 می\u200cخواهم\x1b\x7f\x85\x9f\ud800\udfff\ufffe\uffff\U0001fffe\ufdd0 क्\u200dष\t"
    assert clean_prompt(dirty, what="idea", max_chars=100) == "👩\u200d💻 می\u200cخواهم क्\u200dष"
    with pytest.raises(UserInputError, match="Please describe the idea"):
        clean_prompt("\x00\u200b\u200d\u2060\ufeff\x1b", what="idea", max_chars=100)
