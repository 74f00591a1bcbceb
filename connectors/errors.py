"""Reelwright's one error tree.

Connectors translate every SDK error into these; services raise the input and quota ones; each chat
adapter renders any of them to the user in one place. ``user_message`` is always safe to show.
"""

from __future__ import annotations

import errno
import socket


class ReelwrightError(Exception):
    """Base of every error the bot knows how to explain to a user."""

    user_message: str = "Something went wrong. Please try again."

    def __init__(self, detail: str | None = None, *, user_message: str | None = None) -> None:
        super().__init__(detail or user_message or self.user_message)
        if user_message is not None:
            self.user_message = user_message


class UserInputError(ReelwrightError):
    """The request itself is wrong (empty prompt, bad option, not an image); no paid call was made."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message, user_message=user_message)


class QuotaError(ReelwrightError):
    """A budget or rate limit of ours refuses the request before any paid call."""

    user_message = "You have reached your usage limit. Please try again later."


class UpstreamError(ReelwrightError):
    """A provider (OpenRouter, Google) failed; ``provider`` names it for logs and metrics."""

    user_message = "The AI service failed. Please try again in a moment."

    def __init__(
        self,
        detail: str | None = None,
        *,
        provider: str = "upstream",
        status: int | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(detail, user_message=user_message)
        self.provider = provider
        self.status = status


class RateLimited(UpstreamError):
    """The provider asked us to slow down; ``retry_after`` is in seconds when it said."""

    def __init__(
        self,
        detail: str | None = None,
        *,
        provider: str = "upstream",
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        wait = f" Please try again in about {max(1, round(retry_after))} s." if retry_after else ""
        super().__init__(
            detail,
            provider=provider,
            status=status,
            user_message=f"The AI service is busy right now.{wait or ' Please try again in a minute.'}",
        )
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """Timeouts, connection failures and 5xx answers: transient, already retried by the SDK."""

    user_message = "The AI service is not reachable right now. Please try again in a minute."


class OutOfCredits(UpstreamError):
    """OpenRouter 402 or a quota that cannot recover by waiting: never retried."""

    user_message = "The bot's AI credits are used up. The operator has to top them up."


class AuthenticationFailed(UpstreamError):
    """The configured key was refused: an operator problem, not the user's."""

    user_message = "The bot's AI key was refused. The operator has to fix the configuration."


class ContentBlocked(UpstreamError):
    """The provider's safety filter refused the prompt or the output."""

    user_message = "The AI service's safety filter blocked this request. Try rewording it."


class InvalidResponse(UpstreamError):
    """The provider answered, but not with something usable (error body, bad JSON, no content)."""

    user_message = "The AI service returned an unusable answer. Please try again."


class ModelNotFound(UpstreamError):
    """The configured model name is unknown to the provider."""

    user_message = "The configured AI model is not available. The operator has to fix the model name."


_UNREACHABLE_ERRNOS = {errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable"}


def unreachable_reason(exc: BaseException) -> str | None:
    """Why no connection could be made, read from ``exc``'s chain of causes, or None.

    Some transports (the aiohttp one the OpenAI SDK uses) report a refused connection as a connect
    *timeout*; the socket error underneath says what really happened, and an operator who reads
    "timed out" looks for a slow server instead of a wrong port or a server that is down.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return f"connection refused ({current})"
        if isinstance(current, socket.gaierror):
            return f"host not found ({current})"
        if isinstance(current, OSError) and current.errno in _UNREACHABLE_ERRNOS:
            return f"{_UNREACHABLE_ERRNOS[current.errno]} ({current})"
        current = current.__cause__ or current.__context__
    return None
