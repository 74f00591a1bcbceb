"""Trending video ideas for a niche: each with a hook, an angle and why it should work now."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from services.config import service_config
from services.prompts import check_range, clean_prompt
from services.structured import generate_structured
from services.usage import Usage

MAX_IDEAS = 10


class TrendIdea(BaseModel):
    title: str
    hook: str = Field(description="The first line or shot that stops the scroll")
    angle: str = Field(description="What makes this take different")
    why_now: str = Field(description="Why it should work right now")


class TrendDraft(BaseModel):
    ideas: list[TrendIdea]


class TrendReport(BaseModel):
    niche: str
    ideas: list[TrendIdea]
    usage: Usage


async def generate_trending_ideas(niche: str, *, count: int = 5, today: datetime | None = None) -> TrendReport:
    """``count`` ideas (1-10) for ``niche``, dated so the model reasons about the current season."""
    config = service_config()
    niche = clean_prompt(niche, what="niche", max_chars=200)
    count = check_range(count, name="count", low=1, high=MAX_IDEAS)
    date = (today or datetime.now(UTC)).strftime("%d %B %Y")

    def check(draft: TrendDraft) -> str | None:
        return None if len(draft.ideas) >= count else f"exactly {count} ideas are required"

    result = await generate_structured(
        TrendDraft,
        model=config.trends_model,
        system="You are a short-video trend strategist. Answer in JSON only.",
        user=f"Today is {date}. Give trending short-video ideas for the niche: {niche}.\nReturn exactly {count} ideas.",
        check=check,
    )
    return TrendReport(niche=niche, ideas=result.value.ideas[:count], usage=result.usage)
