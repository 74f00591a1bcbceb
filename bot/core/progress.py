"""One status line per command, throttled the same way on every platform.

A platform shows a command's progress in one place it edits (a Telegram status message, a Discord
interaction's ``@original``); ``StatusLine`` decides when. Nothing shows before ``status_delay``
(a fast answer then costs no status call at all), then at most one update per ``edit_interval``
with the latest line winning, and nothing once the answer is on its way (``finish``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Shows one status line on the platform (sends the status message, or edits it).
ShowStatus = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ProgressPolicy:
    """``status_delay``: seconds a command runs before its status line is first shown;
    ``edit_interval``: the fewest seconds between two updates of it (a platform's edit limits)."""

    status_delay: float = 2.0
    edit_interval: float = 3.0


class StatusLine:
    """The throttle between a command's progress lines and its platform's ``show``."""

    def __init__(self, policy: ProgressPolicy, show: ShowStatus) -> None:
        self.policy = policy
        self._show = show
        self._lock = asyncio.Lock()  # one update at a time, and none overtaking the answer
        self._started = time.monotonic()
        self._latest: str | None = None
        self._shown: str | None = None
        self._last_shown: float | None = None
        self._timer: asyncio.Task[None] | None = None
        self._finished = False

    async def update(self, text: str) -> None:
        """Show ``text`` now if the policy allows, else when it does (unless a newer line replaces it)."""
        if self._finished:
            return
        self._latest = text
        if self._timer is not None:
            return  # an update is already due; it will show the latest line
        due = (
            self._started + self.policy.status_delay
            if self._last_shown is None
            else self._last_shown + self.policy.edit_interval
        )
        wait = due - time.monotonic()
        if wait <= 0:
            await self._flush()
        else:
            self._timer = asyncio.create_task(self._flush_after(wait))

    async def _flush_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            text = self._latest
            if self._finished or text is None or text == self._shown:
                return
            try:
                await self._show(text)
            except Exception:
                # A status line is a courtesy: losing one must never cost the answer.
                log.warning("status update failed", exc_info=True)
            self._shown = text
            self._last_shown = time.monotonic()

    async def finish(self) -> None:
        """No update starts after this returns, and one already in flight has ended."""
        self._finished = True
        async with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
