"""Stories as video segments: one call, long stories in concurrent chunks, or alternative sets.

Every segment's duration is one Veo clip length (4, 6 or 8 s) and its narration fits that duration
at a natural speaking rate; a narration too long for an 8-second clip is cut at a word boundary.

A model that stays lazy after one retry still gives a story when what it wrote is usable: fewer
segments than asked (the story's ``note`` says so), or an outline with fewer parts than asked (the
chunks are re-planned over the parts it has). An answer with nothing usable is an ``InvalidResponse``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from pydantic import BaseModel, Field

from services.characters import CharacterProfile, character_prompt_note
from services.config import service_config
from services.prompts import check_range, clean_prompt
from services.structured import generate_structured
from services.usage import Usage

CLIP_SECONDS: tuple[int, ...] = (4, 6, 8)
WORDS_PER_SECOND = 2.5
MAX_SEGMENTS = 12
MAX_LONG_SEGMENTS = 60
CHUNK_SEGMENTS = 8
MAX_SETS = 5


class SegmentDraft(BaseModel):
    """One segment as the model writes it."""

    narration: str = Field(description="Voice-over text for this clip, spoken in the clip's duration")
    visual_prompt: str = Field(description="A self-contained prompt for a video model describing the shot")
    duration_seconds: Literal[4, 6, 8] = Field(description="Clip length in seconds")


class StoryDraft(BaseModel):
    title: str
    segments: list[SegmentDraft]


class StorySegment(BaseModel):
    number: int
    narration: str
    visual_prompt: str
    duration_seconds: int


class Story(BaseModel):
    title: str
    idea: str
    segments: list[StorySegment]
    usage: Usage = Field(default_factory=Usage)
    #: For the user when the story differs from what was asked (e.g. fewer segments); None otherwise.
    note: str | None = None

    @property
    def total_seconds(self) -> int:
        return sum(segment.duration_seconds for segment in self.segments)


class StoryRequest(BaseModel):
    idea: str
    segments: int = 5
    style: str | None = None
    character: CharacterProfile | None = None


class StorySets(BaseModel):
    idea: str
    sets: list[Story]
    usage: Usage


class ChunkPlan(BaseModel):
    summary: str = Field(description="What happens in this part of the story")


class StoryOutline(BaseModel):
    title: str
    premise: str
    parts: list[ChunkPlan]


def words_for(seconds: int) -> int:
    return int(seconds * WORDS_PER_SECOND)


def fit_segment(number: int, draft: SegmentDraft) -> StorySegment:
    """Give the segment the shortest clip its narration fits in; trim narration past 8 seconds."""
    words = draft.narration.split()
    needed = math.ceil(len(words) / WORDS_PER_SECOND) if words else CLIP_SECONDS[0]
    duration = next((clip for clip in CLIP_SECONDS if clip >= max(needed, draft.duration_seconds)), None)
    if duration is None:
        duration = CLIP_SECONDS[-1]
        limit = words_for(duration)
        words = words[:limit]
        words[-1] = words[-1].rstrip(",;:") + "…"
    return StorySegment(
        number=number,
        narration=" ".join(words),
        visual_prompt=" ".join(draft.visual_prompt.split()),
        duration_seconds=duration,
    )


def _system_prompt() -> str:
    limits = ", ".join(f"{s} s ≤ {words_for(s)} words" for s in CLIP_SECONDS)
    return (
        "You write stories for short vertical videos. Each segment is one video clip of 4, 6 or 8 "
        f"seconds; its narration must be speakable in that time ({limits}). Each visual_prompt is a "
        "complete, self-contained shot description for a video model (subject, action, setting, camera, "
        "lighting) that repeats the character's look every time. Answer in JSON only."
    )


NO_STORY = "The AI model wrote no usable story, even after asking again. Please try again."
NO_OUTLINE = (
    "The AI model could not plan this long story, even after asking again. Please try again, or ask for fewer segments."
)


async def _draft_story(user_prompt: str, expected: int, unusable_message: str = NO_STORY) -> tuple[StoryDraft, Usage]:
    """A draft with ``expected`` segments, or fewer (at least one) when the model stays short after a retry."""
    config = service_config()

    def check(draft: StoryDraft) -> str | None:
        if not draft.segments:
            return "it has no segments"
        if len(draft.segments) < expected:
            return f"it has {len(draft.segments)} segments; exactly {expected} are required"
        return None

    result = await generate_structured(
        StoryDraft,
        model=config.story_model,
        system=_system_prompt(),
        user=user_prompt,
        check=check,
        usable=lambda draft: bool(draft.segments),
        unusable_message=unusable_message,
    )
    return result.value, result.usage


def shortfall_note(written: int, asked: int) -> str | None:
    """What the user is told when the model wrote fewer segments than asked."""
    if written >= asked:
        return None
    return f"The AI model wrote {written} of the {asked} segments asked, even after asking again: here they are."


def plan_chunk_sizes(count: int, parts: int, chunk_size: int = CHUNK_SEGMENTS) -> list[int]:
    """Segments per chunk for ``count`` segments over ``parts`` outline parts.

    With the parts asked for (``ceil(count / chunk_size)``) chunks are ``chunk_size`` long and the last
    takes the remainder; with fewer parts (a lazy outline) the segments are spread evenly, at most
    ``MAX_SEGMENTS`` (what one call writes reliably) each, so the story may come out shorter.
    """
    if parts >= math.ceil(count / chunk_size):
        return [min(chunk_size, count - start) for start in range(0, count, chunk_size)]
    total = min(count, parts * MAX_SEGMENTS)
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def _validated_request(request: StoryRequest, *, max_segments: int) -> tuple[str, int]:
    config = service_config()
    idea = clean_prompt(request.idea, what="story idea", max_chars=config.max_prompt_chars)
    count = check_range(request.segments, name="segments", low=1, high=max_segments)
    return idea, count


def _story_prompt(idea: str, count: int, request: StoryRequest, extra: str = "") -> str:
    style = f" Style: {request.style}." if request.style else ""
    return (
        f"Write a story for a short video about: {idea}.{style}{character_prompt_note(request.character)}"
        f"{extra}\nReturn exactly {count} segments."
    )


def _story_from_draft(idea: str, draft: StoryDraft, count: int, usage: Usage, first_number: int = 1) -> Story:
    segments = [fit_segment(first_number + i, seg) for i, seg in enumerate(draft.segments[:count])]
    return Story(
        title=" ".join(draft.title.split()) or idea[:60],
        idea=idea,
        segments=segments,
        usage=usage,
        note=shortfall_note(len(segments), count),
    )


async def generate_story_segments(request: StoryRequest) -> Story:
    """A story of ``request.segments`` segments (1-12) in one structured model call."""
    idea, count = _validated_request(request, max_segments=MAX_SEGMENTS)
    draft, usage = await _draft_story(_story_prompt(idea, count, request), count)
    return _story_from_draft(idea, draft, count, usage)


async def generate_story_segments_chunked(request: StoryRequest, *, chunk_size: int = CHUNK_SEGMENTS) -> Story:
    """A long story (up to 60 segments): an outline first, then every chunk concurrently from it.

    Each chunk sees the whole outline and the summaries of its neighbours, so the joined story keeps
    its continuity while wall time stays about two model latencies whatever the length. An outline
    with fewer parts than asked, even after a retry, is used as it is: the chunks are re-planned over
    its parts (``plan_chunk_sizes``) and the story's ``note`` says when it came out shorter.
    """
    idea, count = _validated_request(request, max_segments=MAX_LONG_SEGMENTS)
    config = service_config()
    parts = math.ceil(count / chunk_size)

    def outline_check(outline: StoryOutline) -> str | None:
        if len(outline.parts) < parts:
            return f"it has {len(outline.parts)} parts; exactly {parts} are required"
        return None

    style = f" Style: {request.style}." if request.style else ""
    outline_result = await generate_structured(
        StoryOutline,
        model=config.story_model,
        system="You plan long stories for series of short video clips. Answer in JSON only.",
        user=(
            f"Plan a story about: {idea}.{style}{character_prompt_note(request.character)}\n"
            f"Split it into exactly {parts} consecutive parts of about {chunk_size} clips each, "
            "with a clear beginning, rising tension and an ending."
        ),
        check=outline_check,
        usable=lambda outline: bool(outline.parts),
        unusable_message=NO_OUTLINE,
    )
    outline = outline_result.value
    plans = outline.parts[:parts]
    chunk_sizes = plan_chunk_sizes(count, len(plans), chunk_size)
    planned = len(chunk_sizes)

    async def write_chunk(index: int) -> tuple[StoryDraft, Usage]:
        before = plans[index - 1].summary if index > 0 else "(this is the opening)"
        after = plans[index + 1].summary if index + 1 < planned else "(this is the ending)"
        extra = (
            f"\nWhole story: {outline.title}: {outline.premise}\n"
            f"This is part {index + 1} of {planned}: {plans[index].summary}\n"
            f"Previous part: {before}\nNext part: {after}\n"
            "Continue seamlessly from the previous part; do not recap it, do not jump ahead."
        )
        unusable = (
            f"The AI model could not write part {index + 1} of {planned} of this story, even after asking again. "
            "Please try again."
        )
        size = chunk_sizes[index]
        return await _draft_story(_story_prompt(idea, size, request, extra), size, unusable)

    drafts = await asyncio.gather(*(write_chunk(i) for i in range(planned)))
    usage = outline_result.usage
    segments: list[StorySegment] = []
    for (draft, chunk_usage), size in zip(drafts, chunk_sizes, strict=True):
        usage += chunk_usage
        first_number = len(segments) + 1
        segments.extend(fit_segment(first_number + i, seg) for i, seg in enumerate(draft.segments[:size]))
    title = " ".join(outline.title.split()) or idea[:60]
    return Story(title=title, idea=idea, segments=segments, usage=usage, note=shortfall_note(len(segments), count))


async def generate_story_segments_in_sets(request: StoryRequest, *, sets: int = 3) -> StorySets:
    """``sets`` alternative stories for one idea, generated concurrently, each taking another angle."""
    idea, count = _validated_request(request, max_segments=MAX_SEGMENTS)
    check_range(sets, name="sets", low=2, high=MAX_SETS)

    async def one(index: int) -> Story:
        extra = f"\nThis is alternative {index + 1} of {sets}: take a clearly different angle, tone and ending."
        draft, usage = await _draft_story(_story_prompt(idea, count, request, extra), count)
        return _story_from_draft(idea, draft, count, usage)

    stories = await asyncio.gather(*(one(i) for i in range(sets)))
    usage = Usage()
    for story in stories:
        usage += story.usage
    return StorySets(idea=idea, sets=list(stories), usage=usage)
