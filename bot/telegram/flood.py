"""Telegram's flood limits, through PTB's ``AIORateLimiter`` with two adjustments.

* Paced, not bursty: the stock limiter is a leaky bucket holding ``rate`` calls, so after a quiet
  spell it lets ``rate`` calls out at once and then ``rate`` more within the same second: twice what
  Telegram allows in one second, answered with 429 and a pause for everybody. Here the bucket holds
  one call and drains at ``PACING`` of the configured rate, so no one-second window ever exceeds it.
* Only messages count: chat actions and file look-ups are not messages and are never held back
  (a chat action that arrives late is worthless anyway).

RetryAfter is still retried ``max_retries`` times after ``retry_after`` (the stock behaviour).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

#: A Bot API answer as PTB hands it on (its own alias lives in a private module).
JSONDict = dict[str, Any]

#: Share of the configured rate actually used, so network jitter cannot squeeze an extra message
#: into Telegram's one-second window.
PACING = 0.95
UNLIMITED_ENDPOINTS = frozenset(
    {"sendChatAction", "getFile", "getMe", "getUpdates", "setMyCommands", "deleteWebhook", "setWebhook"}
)


class FloodLimiter(AIORateLimiter):
    """``AIORateLimiter`` paced at ``messages_per_second`` with chat actions exempt."""

    def __init__(self, messages_per_second: float, max_retries: int) -> None:
        super().__init__(
            overall_max_rate=1, overall_time_period=1 / (messages_per_second * PACING), max_retries=max_retries
        )

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | JSONDict | list[JSONDict]:
        if endpoint in UNLIMITED_ENDPOINTS:
            return await callback(*args, **kwargs)
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
