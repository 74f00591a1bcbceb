"""The sandbox's AI upstreams with the test hooks: full history, faults, and per-route accessors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.sandbox.fake_genai import SandboxGenAI, VideoOutcome
from bot.sandbox.fake_openrouter import SandboxOpenRouter
from tests.fakes.faults import InstrumentedUpstream, RecordedRequest

__all__ = ["FakeGenAI", "FakeOpenRouter"]

_DOWNLOAD_CHUNK = 64 * 1024


class FakeOpenRouter(InstrumentedUpstream, SandboxOpenRouter):
    """``SandboxOpenRouter`` for tests; ``responder`` (request JSON -> content) replaces the made-up text."""

    def __init__(self, *args: Any, responder: Callable[[dict[str, Any]], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responder: Callable[[dict[str, Any]], str] | None = responder

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Requests that reached ``chat/completions``."""
        return self.requests_on("chat")

    def reply_text(self, body: dict[str, Any]) -> str:
        """The responder's answer when a test set one."""
        return self.responder(body) if self.responder is not None else super().reply_text(body)


class FakeGenAI(InstrumentedUpstream, SandboxGenAI):
    """``SandboxGenAI`` for tests.

    ``download_chunked`` serves downloads without Content-Length, in pieces, recording in
    ``download_bytes_sent`` what each sent; ``serve_files_of(other)`` lets this fake answer a
    download redirected from ``other``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.download_chunked: bool = False
        #: Bytes each finished chunked download managed to send before it ended or the client left.
        self.download_bytes_sent: list[int] = []
        self._peers: list[SandboxGenAI] = []
        #: Scripted outcomes of the next videos whose prompt contains a key, in order (then ``video_outcome``).
        self.video_outcomes_for: dict[str, list[VideoOutcome]] = {}

    def next_video_outcome(self, prompt: str) -> VideoOutcome:
        for key, outcomes in self.video_outcomes_for.items():
            if key in prompt and outcomes:
                return outcomes.pop(0)
        return super().next_video_outcome(prompt)

    @property
    def video_generation_requests(self) -> list[RecordedRequest]:
        """Every ``predictLongRunning`` call: one per video the caller paid for."""
        return self.requests_on("predictLongRunning")

    @property
    def poll_requests(self) -> list[RecordedRequest]:
        """Every operation poll (``fetchPredictOperation`` or ``GET .../operations/{id}``)."""
        return self.requests_on("operation")

    @property
    def download_requests(self) -> list[RecordedRequest]:
        """Every file download."""
        return self.requests_on("download")

    def serve_files_of(self, other: SandboxGenAI) -> None:
        """Also serve the files ``other`` generated (the target of its ``download_redirect_to``)."""
        self._peers.append(other)

    def stored_file(self, file_id: str) -> bytes | None:
        """This fake's file, else a peer's."""
        if (data := super().stored_file(file_id)) is not None:
            return data
        for peer in self._peers:
            if (data := peer.stored_file(file_id)) is not None:
                return data
        return None

    async def send_file(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """Send ``data`` without a Content-Length, piece by piece, until done or the client leaves."""
        if not self.download_chunked:
            return await super().send_file(request, data)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.enable_chunked_encoding()
        sent = 0
        try:
            await response.prepare(request)
            view = memoryview(data)
            for start in range(0, len(data), _DOWNLOAD_CHUNK):
                piece = view[start : start + _DOWNLOAD_CHUNK]
                await response.write(piece.tobytes())
                sent += len(piece)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading and closed the connection
        finally:
            self.download_bytes_sent.append(sent)
        return response
