"""Meme scripts: setup, punchline, on-screen caption and a visual for each beat.

A model that stays short after one retry still gives the beats it wrote, with a ``note`` saying so;
a script with no beats at all is an ``InvalidResponse``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.config import service_config
from services.prompts import check_range, clean_prompt
from services.structured import generate_structured
from services.usage import Usage

MAX_MEMES = 5


class MemeSegment(BaseModel):
    setup: str = Field(description="The situation, told in one short line")
    punchline: str = Field(description="The twist that makes it funny")
    caption: str = Field(description="Bold on-screen text, at most 12 words")
    visual_prompt: str = Field(description="Shot description for an image or video model")


class MemeDraft(BaseModel):
    title: str
    segments: list[MemeSegment]


class MemeScript(BaseModel):
    topic: str
    title: str
    segments: list[MemeSegment]
    usage: Usage
    #: For the user when the script has fewer beats than asked; None otherwise.
    note: str | None = None


async def generate_meme_segments(topic: str, *, count: int = 3, tone: str | None = None) -> MemeScript:
    """``count`` meme beats about ``topic`` (1-5)."""
    config = service_config()
    topic = clean_prompt(topic, what="meme topic", max_chars=config.max_prompt_chars)
    count = check_range(count, name="count", low=1, high=MAX_MEMES)
    tone_note = f" Tone: {tone}." if tone else ""

    def check(draft: MemeDraft) -> str | None:
        return None if len(draft.segments) >= count else f"exactly {count} segments are required"

    result = await generate_structured(
        MemeDraft,
        model=config.meme_model,
        system="You write short-video meme scripts that are relatable and punchy. Answer in JSON only.",
        user=f"Write a meme script about: {topic}.{tone_note}\nReturn exactly {count} segments.",
        check=check,
        usable=lambda draft: bool(draft.segments),
        unusable_message="The AI model wrote no usable meme, even after asking again. Please try again.",
        temperature=1.0,
    )
    draft = result.value
    segments = draft.segments[:count]
    note = (
        f"The AI model wrote {len(segments)} of the {count} beats asked, even after asking again: here they are."
        if len(segments) < count
        else None
    )
    return MemeScript(topic=topic, title=draft.title, segments=segments, usage=result.usage, note=note)
