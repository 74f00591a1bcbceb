"""Updates are handled concurrently: 50 slow commands from 50 users are all at the model at once,
and one generation held back never blocks another user. Shown structurally (a gate), not by a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes import FakeOpenRouter, RecordedRequest
from tests.telegram.conftest import TelegramBot

USERS = 50

Dispatch = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


def hold_requests(fake: FakeOpenRouter, release: Callable[[RecordedRequest], Awaitable[None]]) -> None:
    """Make the AI fake wait on ``release(request)`` before it answers each chat request."""
    original: Dispatch = fake.dispatch

    async def gated(request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if recorded.route == "chat":
            await release(recorded)
        return await original(request, recorded)

    fake.dispatch = gated  # type: ignore[method-assign]


async def test_50_users_are_all_at_the_model_before_the_first_reply(start_bot: Any) -> None:
    # Telegram's 30 messages/s would make 100 messages take 3 s; the flood limit has its own test.
    tg: TelegramBot = await start_bot(telegram_rate_limit_per_second=10_000)
    all_in_flight = asyncio.Event()
    replies_before_release: list[int] = []

    async def release(recorded: RecordedRequest) -> None:
        if len(tg.text.chat_requests) == USERS:
            replies_before_release.append(len([c for c in tg.api.calls if c.method == "editMessageText"]))
            all_in_flight.set()
        await all_in_flight.wait()

    hold_requests(tg.text, release)
    for user in range(1, USERS + 1):
        await tg.api.send_command(10_000 + user, f"/write a caption for video {user}")
    await tg.settle()
    assert replies_before_release == [0]
    for user in range(1, USERS + 1):
        answers = [c for c in tg.api.sent_to(10_000 + user) if c.method == "editMessageText"]
        assert len(answers) == 1 and answers[0].params["text"].startswith("✍️ Caption")


async def test_a_held_generation_does_not_block_another_user(tg: TelegramBot) -> None:
    slow_user_released = asyncio.Event()
    slow_user_at_model = asyncio.Event()

    async def release(recorded: RecordedRequest) -> None:
        if "slow story" in str(recorded.json):
            slow_user_at_model.set()
            await slow_user_released.wait()

    hold_requests(tg.text, release)
    await tg.api.send_command(1, "/story a slow story")
    await slow_user_at_model.wait()
    await tg.api.send_command(2, "/write a quick caption")
    await tg.api.wait_for(lambda calls: any(c.chat_id == 2 and c.method == "editMessageText" for c in calls))
    assert not [c for c in tg.api.sent_to(1) if c.method == "editMessageText"]
    slow_user_released.set()
    await tg.settle()
    assert [c.method for c in tg.api.sent_to(1)][-1] == "sendPhoto"
