"""The chat core's one size cap on uploads: the declared size is checked before anything runs, and a
stream is read only until it passes MAX_IMAGE_BYTES, then closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.core.context import CommandContext, IncomingImage
from bot.core.dispatcher import ChatCore, Next
from bot.core.replies import Reply
from connectors.errors import UserInputError
from services.memory import UserMemory
from tests.bot.helpers import RecordingResponder, catalogue, invocation, png_bytes, uploaded
from tests.fakes import FakeGenAI, FakeOpenRouter

MB = 1024 * 1024
CHUNK = 64 * 1024


class EndlessUpload:
    """A platform stream that never ends; records how much was pulled and whether it was closed."""

    def __init__(self) -> None:
        self.pulled = 0
        self.opened = False
        self.closed = False

    async def stream(self) -> AsyncIterator[bytes]:
        self.opened = True
        chunk = bytes(CHUNK)
        try:
            while True:
                self.pulled += len(chunk)
                yield chunk
        finally:
            self.closed = True


async def test_an_endless_stream_stops_just_past_the_cap_and_is_closed() -> None:
    upload = EndlessUpload()
    image = IncomingImage(filename="zero.png", stream=upload.stream)
    with pytest.raises(UserInputError, match=r"^The image is over the 1 MB limit\. Please send a smaller image\.$"):
        await image.read(max_bytes=MB)
    assert upload.pulled == MB + CHUNK
    assert upload.closed


async def test_the_default_cap_is_max_image_bytes(upstreams: tuple[FakeOpenRouter, FakeGenAI]) -> None:
    upload = EndlessUpload()
    with pytest.raises(UserInputError, match="over the 10 MB limit"):
        await IncomingImage(filename="zero.png", stream=upload.stream).read()
    assert upload.pulled == 10 * MB + CHUNK


async def test_a_stream_at_the_cap_is_read_whole() -> None:
    data = png_bytes(64, 64)
    assert await uploaded(data).read(max_bytes=len(data)) == data


async def test_a_declared_size_over_the_cap_is_refused_before_any_middleware_or_download(
    upstreams: tuple[FakeOpenRouter, FakeGenAI],
) -> None:
    """No guard, budget or handler runs, and the platform stream is never opened."""
    reached: list[str] = []

    async def record(ctx: CommandContext, following: Next) -> Reply:
        reached.append(ctx.command.name)
        return await following(ctx)

    core = ChatCore(catalogue(UserMemory()), middlewares=[record])
    upload = EndlessUpload()
    image = IncomingImage(filename="big.png", stream=upload.stream, size=10 * MB + 1)
    responder = RecordingResponder()
    reply = await core.handle(invocation("character", "Captain", image=image), responder)
    assert reply.text == "⚠️ The image is more than 10 MB; the limit is 10 MB."
    assert reached == [] and not upload.opened
    text, media = upstreams
    assert text.requests == [] and media.requests == []
