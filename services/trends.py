"""Trending video ideas for a niche: each with a hook, an angle and why it should work now.

A model that stays short after one retry still gives the ideas it wrote, with a ``note`` saying so
(such a report is not cached); a report with no ideas at all is an ``InvalidResponse``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
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
    #: For the user when the report has fewer ideas than asked; None otherwise.
    note: str | None = None


CacheKey = tuple[str, int, str, str]


class TrendsCache:
    """Identical requests (niche normalised, count, model, day) answered once per ``ttl_seconds``.

    Concurrent identical requests share one upstream call (single flight); only complete successes are
    kept (a short report is not served again for the rest of the day).
    A cached or shared answer reports zero usage: it cost nothing, so no budget is charged twice.
    """

    def __init__(self, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 512):
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, tuple[float, TrendReport]] = OrderedDict()
        self._in_flight: dict[CacheKey, asyncio.Future[TrendReport]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._in_flight.clear()

    async def get(self, key: CacheKey, produce: Callable[[], Awaitable[TrendReport]]) -> TrendReport:
        """The cached report for ``key``, a share of the call in flight for it, or a new call."""
        entry = self._entries.get(key)
        if entry is not None:
            if self.clock() < entry[0]:
                return entry[1].model_copy(update={"usage": Usage()})
            del self._entries[key]
        task = self._in_flight.get(key)
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            shared = await asyncio.shield(task)
            return shared.model_copy(update={"usage": Usage()})
        task = asyncio.ensure_future(produce())
        self._in_flight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: one caller giving up must not cancel the call the others share.
        return await asyncio.shield(task)

    def _finished(self, key: CacheKey, task: asyncio.Future[TrendReport]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if task.cancelled() or task.exception() is not None or task.result().note is not None:
            return
        self._entries[key] = (self.clock() + self.ttl_seconds, task.result())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


_cache: TrendsCache | None = None


def configure_trends_cache(ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> TrendsCache | None:
    """Serve identical /trends requests from a cache for ``ttl_seconds`` (0 turns it off; off by default)."""
    global _cache
    _cache = TrendsCache(ttl_seconds, clock=clock) if ttl_seconds > 0 else None
    return _cache


def normalise_niche(niche: str) -> str:
    return " ".join(niche.casefold().split())


async def generate_trending_ideas(niche: str, *, count: int = 5, today: datetime | None = None) -> TrendReport:
    """``count`` ideas (1-10) for ``niche``, from the cache when an identical request was answered lately."""
    niche = clean_prompt(niche, what="niche", max_chars=200)
    count = check_range(count, name="count", low=1, high=MAX_IDEAS)
    cache = _cache
    if cache is None:
        return await _generate_trending_ideas(niche, count=count, today=today)
    day = (today or datetime.now(UTC)).strftime("%Y-%m-%d")
    key = (normalise_niche(niche), count, service_config().trends_model, day)
    return await cache.get(key, lambda: _generate_trending_ideas(niche, count=count, today=today))


async def _generate_trending_ideas(niche: str, *, count: int, today: datetime | None) -> TrendReport:
    """``count`` ideas (1-10) for ``niche``, dated so the model reasons about the current season."""
    config = service_config()
    date = (today or datetime.now(UTC)).strftime("%d %B %Y")

    def check(draft: TrendDraft) -> str | None:
        return None if len(draft.ideas) >= count else f"exactly {count} ideas are required"

    result = await generate_structured(
        TrendDraft,
        model=config.trends_model,
        system="You are a short-video trend strategist. Answer in JSON only.",
        user=f"Today is {date}. Give trending short-video ideas for the niche: {niche}.\nReturn exactly {count} ideas.",
        check=check,
        usable=lambda draft: bool(draft.ideas),
        unusable_message="The AI model gave no usable trend ideas, even after asking again. Please try again.",
    )
    ideas = result.value.ideas[:count]
    note = (
        f"The AI model gave {len(ideas)} of the {count} ideas asked, even after asking again: here they are."
        if len(ideas) < count
        else None
    )
    return TrendReport(niche=niche, ideas=ideas, usage=result.usage, note=note)
