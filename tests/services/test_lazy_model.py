"""A lazy model (lists shorter than asked, even after the one retry) against the fake OpenRouter,
through the real openai SDK: every structured service gives a usable result that says what is
missing, or an ``InvalidResponse`` with a clear message; never a traceback, never a silent gap."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from connectors.errors import InvalidResponse
from services.meme import generate_meme_segments
from services.story import (
    NO_OUTLINE,
    NO_STORY,
    StoryRequest,
    generate_story_segments,
    generate_story_segments_chunked,
    generate_story_segments_in_sets,
    plan_chunk_sizes,
)
from services.structured import INCOMPLETE_ANSWER, generate_structured
from services.trends import configure_trends_cache, generate_trending_ideas
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

Upstreams = tuple[FakeOpenRouter, FakeGenAI]
TODAY = datetime(2026, 11, 30, tzinfo=UTC)


def lazy(fake: FakeOpenRouter, items: int, calls: int) -> None:
    """The next ``calls`` answers have at most ``items`` entries in their list."""
    fake.inject(*[Fault.lazy(items)] * calls)


def chunk_prompts(fake: FakeOpenRouter) -> list[str]:
    return [
        r.json["messages"][-1]["content"]
        for r in fake.chat_requests
        if r.json["response_format"]["json_schema"]["name"] == "StoryDraft"
    ]


# -- the structured-output contract ------------------------------------------------------------------


class Names(BaseModel):
    names: list[str]


async def test_a_value_still_failing_its_check_after_the_retry_is_an_invalid_response(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 1, 2)
    with pytest.raises(InvalidResponse) as caught:
        await generate_structured(
            Names,
            model="m",
            system="s",
            user="Give exactly 4 names.",
            check=lambda value: None if len(value.names) >= 4 else "exactly 4 names are required",
        )
    assert caught.value.user_message == INCOMPLETE_ANSWER
    assert len(text.chat_requests) == 2


async def test_usable_accepts_a_short_value_and_names_the_shortfall(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 1, 2)
    result = await generate_structured(
        Names,
        model="m",
        system="s",
        user="Give exactly 4 names.",
        check=lambda value: None if len(value.names) >= 4 else "exactly 4 names are required",
        usable=lambda value: bool(value.names),
    )
    assert len(result.value.names) == 1
    assert result.shortfall == "exactly 4 names are required"
    assert result.usage.model_calls == 2


async def test_the_lazy_fault_obeys_once_then_the_model_answers_in_full(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 1, 1)
    story = await generate_story_segments(StoryRequest(idea="a dragon learns to fly", segments=5))
    assert len(story.segments) == 5 and story.note is None
    assert len(text.chat_requests) == 2


# -- /longstory ----------------------------------------------------------------------------------------


def test_chunk_plan_spreads_the_segments_over_the_parts_there_are() -> None:
    assert plan_chunk_sizes(19, 3) == [8, 8, 3]
    assert plan_chunk_sizes(24, 2) == [12, 12]
    assert plan_chunk_sizes(20, 2) == [10, 10]
    assert plan_chunk_sizes(40, 2) == [12, 12]
    assert plan_chunk_sizes(25, 3) == [9, 8, 8]


async def test_lazy_outline_with_enough_parts_is_replanned_and_the_story_is_whole(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 2, 2)  # the outline, asked for 3 parts, twice gives 2
    story = await generate_story_segments_chunked(StoryRequest(idea="a heist on the moon", segments=24))
    assert [s.number for s in story.segments] == list(range(1, 25))
    assert story.note is None
    prompts = chunk_prompts(text)
    assert len(prompts) == 2
    assert all("Return exactly 12 segments." in p for p in prompts)
    assert sorted(p.split("This is part ")[1][:6] for p in prompts) == ["1 of 2", "2 of 2"]
    assert story.usage.model_calls == 4


async def test_lazy_outline_too_short_for_the_length_gives_a_shorter_story_that_says_so(
    upstreams: Upstreams,
) -> None:
    text, _ = upstreams
    lazy(text, 2, 2)  # 5 parts asked for 40 segments; 2 parts hold at most 24
    story = await generate_story_segments_chunked(StoryRequest(idea="a heist on the moon", segments=40))
    assert [s.number for s in story.segments] == list(range(1, 25))
    assert story.note is not None and "24 of the 40 segments" in story.note
    assert len(chunk_prompts(text)) == 2


async def test_outline_without_parts_is_a_clear_invalid_response_and_writes_nothing(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 0, 2)
    with pytest.raises(InvalidResponse) as caught:
        await generate_story_segments_chunked(StoryRequest(idea="a heist on the moon", segments=20))
    assert caught.value.user_message == NO_OUTLINE
    assert len(text.chat_requests) == 2
    assert chunk_prompts(text) == []


async def test_lazy_chunks_give_a_shorter_story_numbered_in_order_that_says_so(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 2, 6)  # the outline (3 parts asked) and both re-planned chunks stay at 2 items
    story = await generate_story_segments_chunked(StoryRequest(idea="a heist on the moon", segments=19))
    assert [s.number for s in story.segments] == [1, 2, 3, 4]
    assert story.note is not None and "4 of the 19 segments" in story.note
    assert story.usage.model_calls == 6


async def test_a_chunk_without_segments_is_a_clear_invalid_response(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.lazy(1), Fault.lazy(0), Fault.lazy(0))  # a one-part outline, then an empty chunk twice
    with pytest.raises(InvalidResponse) as caught:
        await generate_story_segments_chunked(StoryRequest(idea="a heist on the moon", segments=4), chunk_size=8)
    assert "could not write part 1 of 1" in caught.value.user_message
    assert "Something went wrong" not in caught.value.user_message


# -- /story, /storysets ----------------------------------------------------------------------------------


async def test_story_still_short_after_the_retry_says_so(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 3, 2)
    story = await generate_story_segments(StoryRequest(idea="a dragon learns to fly", segments=5))
    assert [s.number for s in story.segments] == [1, 2, 3]
    assert story.note is not None and "3 of the 5 segments" in story.note


async def test_story_without_segments_twice_is_a_clear_invalid_response(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 0, 2)
    with pytest.raises(InvalidResponse) as caught:
        await generate_story_segments(StoryRequest(idea="a dragon learns to fly", segments=5))
    assert caught.value.user_message == NO_STORY


async def test_story_sets_from_a_lazy_model_say_so_per_take(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 1, 4)  # both takes, both attempts
    sets = await generate_story_segments_in_sets(StoryRequest(idea="a cat bakery", segments=3), sets=2)
    assert [len(story.segments) for story in sets.sets] == [1, 1]
    assert all(story.note is not None and "1 of the 3 segments" in story.note for story in sets.sets)


# -- /meme, /trends ------------------------------------------------------------------------------------


async def test_meme_still_short_says_so(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 1, 2)
    meme = await generate_meme_segments("mondays at a startup", count=3)
    assert len(meme.segments) == 1
    assert meme.note is not None and "1 of the 3 beats" in meme.note


async def test_meme_without_beats_is_a_clear_invalid_response(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 0, 2)
    with pytest.raises(InvalidResponse) as caught:
        await generate_meme_segments("mondays at a startup", count=3)
    assert "no usable meme" in caught.value.user_message


@pytest.fixture
def trends_cache() -> Iterator[None]:
    configure_trends_cache(600)
    yield
    configure_trends_cache(0)


async def test_trends_still_short_say_so_and_are_not_cached(upstreams: Upstreams, trends_cache: None) -> None:
    text, _ = upstreams
    lazy(text, 2, 2)
    report = await generate_trending_ideas("indie game dev", count=5, today=TODAY)
    assert len(report.ideas) == 2
    assert report.note is not None and "2 of the 5 ideas" in report.note
    again = await generate_trending_ideas("indie game dev", count=5, today=TODAY)
    assert len(again.ideas) == 5 and again.note is None
    assert len(text.chat_requests) == 3


async def test_trends_without_ideas_are_a_clear_invalid_response(upstreams: Upstreams) -> None:
    text, _ = upstreams
    lazy(text, 0, 2)
    with pytest.raises(InvalidResponse) as caught:
        await generate_trending_ideas("indie game dev", count=5, today=TODAY)
    assert "no usable trend ideas" in caught.value.user_message
