"""Story services against the fake OpenRouter: counts, clip durations, chunking, sets, repair."""

from __future__ import annotations

import json

import pytest

from connectors.errors import InvalidResponse, UserInputError
from services.story import (
    CLIP_SECONDS,
    SegmentDraft,
    StoryRequest,
    fit_segment,
    generate_story_segments,
    generate_story_segments_chunked,
    generate_story_segments_in_sets,
    words_for,
)
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

Upstreams = tuple[FakeOpenRouter, FakeGenAI]


def story_json(count: int, narration: str = "A short line.", duration: int = 4) -> str:
    return json.dumps(
        {
            "title": "The Dragon",
            "segments": [
                {"narration": narration, "visual_prompt": f"shot {i}", "duration_seconds": duration}
                for i in range(count)
            ],
        }
    )


async def test_story_has_the_requested_segments_with_clip_durations(upstreams: Upstreams) -> None:
    text, _ = upstreams
    story = await generate_story_segments(StoryRequest(idea="a dragon learns to fly", segments=7))
    assert [s.number for s in story.segments] == list(range(1, 8))
    assert all(s.duration_seconds in CLIP_SECONDS for s in story.segments)
    assert all(len(s.narration.split()) <= words_for(s.duration_seconds) for s in story.segments)
    assert story.usage.model_calls == 1 and story.usage.prompt_tokens > 0
    [request] = text.chat_requests
    assert "exactly 7 segments" in request.json["messages"][-1]["content"]


def test_narration_too_long_for_its_clip_gets_a_longer_clip() -> None:
    draft = SegmentDraft(narration=" ".join(["word"] * 14), visual_prompt="v", duration_seconds=4)
    segment = fit_segment(1, draft)
    assert segment.duration_seconds == 6
    assert segment.narration == draft.narration


def test_narration_too_long_for_eight_seconds_is_cut_at_a_word() -> None:
    draft = SegmentDraft(narration=" ".join(f"w{i}" for i in range(40)), visual_prompt="v", duration_seconds=8)
    segment = fit_segment(3, draft)
    assert segment.duration_seconds == 8
    assert len(segment.narration.split()) == words_for(8)
    assert segment.narration.endswith("…")


async def test_model_output_in_code_fences_is_repaired_without_a_retry(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.content("```json\n" + story_json(3) + "\n```"))
    story = await generate_story_segments(StoryRequest(idea="x", segments=3))
    assert len(story.segments) == 3
    assert len(text.chat_requests) == 1


async def test_prose_around_json_is_repaired(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.content("Sure! Here it is: " + story_json(2) + " Enjoy."))
    story = await generate_story_segments(StoryRequest(idea="x", segments=2))
    assert story.title == "The Dragon"


async def test_invalid_output_is_retried_once_with_the_error(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.content("I cannot produce JSON today."))
    story = await generate_story_segments(StoryRequest(idea="x", segments=3))
    assert len(story.segments) == 3
    assert len(text.chat_requests) == 2
    retry_messages = text.chat_requests[1].json["messages"]
    assert retry_messages[-2]["role"] == "assistant"
    assert "not usable" in retry_messages[-1]["content"]
    assert story.usage.model_calls == 2


async def test_invalid_output_twice_is_an_invalid_response_never_raw_text(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.content("garbage one"), Fault.content("garbage two"))
    with pytest.raises(InvalidResponse) as caught:
        await generate_story_segments(StoryRequest(idea="x", segments=3))
    assert "garbage" not in caught.value.user_message


async def test_too_few_segments_are_asked_for_again(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.content(story_json(2)))
    story = await generate_story_segments(StoryRequest(idea="x", segments=4))
    assert len(story.segments) == 4
    assert len(text.chat_requests) == 2


async def test_too_many_segments_are_trimmed(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.content(story_json(9)))
    story = await generate_story_segments(StoryRequest(idea="x", segments=4))
    assert len(story.segments) == 4


async def test_truncated_answer_is_retried(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.finish_reason("length"))
    story = await generate_story_segments(StoryRequest(idea="x", segments=2))
    assert len(story.segments) == 2
    assert len(text.chat_requests) == 2


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"idea": "   ", "segments": 3}, "describe"),
        ({"idea": "x" * 2001, "segments": 3}, "limit is 2000"),
        ({"idea": "dragon", "segments": 0}, "between 1 and 12"),
        ({"idea": "dragon", "segments": 13}, "between 1 and 12"),
    ],
)
async def test_bad_input_is_refused_before_any_paid_call(
    upstreams: Upstreams, request_args: dict[str, object], message: str
) -> None:
    text, _ = upstreams
    with pytest.raises(UserInputError, match=message):
        await generate_story_segments(StoryRequest(**request_args))  # type: ignore[arg-type]
    assert text.chat_requests == []


async def test_long_story_outline_then_chunks_concurrently_numbered_in_order(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.latency = 0.3
    story = await generate_story_segments_chunked(StoryRequest(idea="a heist on the moon", segments=40))
    assert [s.number for s in story.segments] == list(range(1, 41))
    requests = text.chat_requests
    assert len(requests) == 6  # one outline + five chunks of eight
    assert requests[0].json["response_format"]["json_schema"]["name"] == "StoryOutline"
    chunk_prompts = [r.json["messages"][-1]["content"] for r in requests[1:]]
    assert all("Return exactly 8 segments." in p for p in chunk_prompts)
    assert any("This is part 1 of 5" in p for p in chunk_prompts)
    assert any("Previous part:" in p and "(this is the ending)" in p for p in chunk_prompts)
    arrivals = [r.time for r in requests[1:]]
    # Sequential chunks would arrive at least four latencies apart; concurrent ones all at once.
    assert max(arrivals) - min(arrivals) < 2 * text.latency
    assert story.usage.model_calls == 6


async def test_long_story_last_chunk_has_the_remainder(upstreams: Upstreams) -> None:
    text, _ = upstreams
    story = await generate_story_segments_chunked(StoryRequest(idea="x", segments=19))
    assert len(story.segments) == 19
    prompts = [r.json["messages"][-1]["content"] for r in text.chat_requests[1:]]
    assert sorted(p.rsplit("Return exactly ", 1)[1] for p in prompts) == ["3 segments.", "8 segments.", "8 segments."]


async def test_story_sets_are_generated_concurrently_with_different_angles(upstreams: Upstreams) -> None:
    text, _ = upstreams
    sets = await generate_story_segments_in_sets(StoryRequest(idea="a cat bakery", segments=3), sets=3)
    assert len(sets.sets) == 3
    assert all(len(story.segments) == 3 for story in sets.sets)
    prompts = [r.json["messages"][-1]["content"] for r in text.chat_requests]
    assert sorted(p.split("This is alternative ")[1][:6] for p in prompts) == ["1 of 3", "2 of 3", "3 of 3"]
    assert sets.usage.model_calls == 3


async def test_sets_out_of_range_is_refused(upstreams: Upstreams) -> None:
    text, _ = upstreams
    with pytest.raises(UserInputError, match="sets"):
        await generate_story_segments_in_sets(StoryRequest(idea="x", segments=3), sets=9)
    assert text.chat_requests == []
