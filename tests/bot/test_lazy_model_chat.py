"""A lazy model seen from the chat: the user's message names what is missing or why nothing came,
and never reads "Something went wrong" (the chat core with the real catalogue, the fake OpenRouter
through the real openai SDK)."""

from __future__ import annotations

from bot.core.dispatcher import ChatCore
from bot.core.replies import Reply
from services.memory import UserMemory
from services.story import Story
from tests.bot.helpers import RecordingResponder, catalogue, invocation
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

Upstreams = tuple[FakeOpenRouter, FakeGenAI]


async def run(command: str, text: str) -> Reply:
    responder = RecordingResponder()
    reply = await ChatCore(catalogue(UserMemory())).handle(invocation(command, text), responder)
    assert responder.delivered == [reply]
    return reply


async def test_longstory_from_a_lazy_outline_is_written_from_the_parts_it_has(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.lazy(2), Fault.lazy(2))  # 5 parts asked for 40 segments, twice only 2
    reply = await run("longstory", "a heist on the moon segments=40")
    assert not reply.is_error
    assert isinstance(reply.result, Story)
    assert [s.number for s in reply.result.segments] == list(range(1, 25))
    assert "24 segments" in reply.blocks[0]
    assert "wrote 24 of the 40 segments asked" in reply.blocks[0]
    assert "Something went wrong" not in reply.text


async def test_longstory_without_a_usable_outline_says_so(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.lazy(0), Fault.lazy(0))
    reply = await run("longstory", "a heist on the moon segments=20")
    assert reply.is_error
    assert "could not plan this long story" in reply.text
    assert "Something went wrong" not in reply.text
    assert len(text.chat_requests) == 2


async def test_trends_from_a_lazy_model_show_what_came_and_say_so(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.lazy(2), Fault.lazy(2))
    reply = await run("trends", "indie game dev count=4")
    assert not reply.is_error
    assert "2 of the 4 ideas asked" in reply.blocks[0]
    assert len(reply.blocks) == 3
