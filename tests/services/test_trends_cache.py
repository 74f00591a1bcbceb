"""Identical /trends requests are served from a cache (single flight), on an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.errors import UpstreamUnavailable
from services.trends import configure_trends_cache, generate_trending_ideas
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

Upstreams = tuple[FakeOpenRouter, FakeGenAI]
TODAY = datetime(2026, 11, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    clock = FakeClock()
    configure_trends_cache(600, clock=clock)
    yield clock
    configure_trends_cache(0)


async def test_identical_requests_share_one_call_until_expiry(upstreams: Upstreams, clock: FakeClock) -> None:
    text, _ = upstreams
    first = await generate_trending_ideas("Indie  Game dev", count=3, today=TODAY)
    second = await generate_trending_ideas("indie game DEV", count=3, today=TODAY)
    assert len(text.chat_requests) == 1
    assert second.ideas == first.ideas
    assert first.usage.model_calls == 1 and second.usage.model_calls == 0  # a cache hit costs nothing

    clock.now += 599
    await generate_trending_ideas("indie game dev", count=3, today=TODAY)
    assert len(text.chat_requests) == 1
    clock.now += 1
    await generate_trending_ideas("indie game dev", count=3, today=TODAY)
    assert len(text.chat_requests) == 2


async def test_other_counts_and_niches_are_other_requests(upstreams: Upstreams, clock: FakeClock) -> None:
    text, _ = upstreams
    await generate_trending_ideas("cooking", count=3, today=TODAY)
    await generate_trending_ideas("cooking", count=4, today=TODAY)
    await generate_trending_ideas("baking", count=3, today=TODAY)
    assert len(text.chat_requests) == 3


async def test_concurrent_identical_requests_make_one_call(upstreams: Upstreams, clock: FakeClock) -> None:
    text, _ = upstreams
    reports = await asyncio.gather(*(generate_trending_ideas("cooking", count=2, today=TODAY) for _ in range(5)))
    assert len(text.chat_requests) == 1
    assert all(report.ideas == reports[0].ideas for report in reports)
    assert sum(report.usage.model_calls for report in reports) == 1


async def test_failures_are_not_cached(upstreams: Upstreams, clock: FakeClock) -> None:
    text, _ = upstreams
    text.inject(Fault.status(500))
    with pytest.raises(UpstreamUnavailable):
        await generate_trending_ideas("cooking", count=2, today=TODAY)
    assert (await generate_trending_ideas("cooking", count=2, today=TODAY)).ideas
    assert len(text.chat_requests) == 2


async def test_off_by_default(upstreams: Upstreams) -> None:
    text, _ = upstreams
    configure_trends_cache(0)
    await generate_trending_ideas("cooking", count=2, today=TODAY)
    await generate_trending_ideas("cooking", count=2, today=TODAY)
    assert len(text.chat_requests) == 2
