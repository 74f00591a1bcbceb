"""Progress for one command on Telegram: chat actions while waiting, one status message edited as
the work advances (throttled per message), and the final reply in place of that status message."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from telegram.error import TelegramError

from bot.core.replies import Reply
from bot.telegram.delivery import ReplyDelivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressPolicy:
    """``status_delay``: show a status message only for work still running after this long (the chat
    action already says "working", and a fast answer then costs one message, not three);
    ``edit_interval``: at most one edit of that message per interval (Telegram's edit limits);
    ``action_interval``: a chat action lasts about 5 s on clients, so it is repeated this often."""

    status_delay: float = 2.0
    edit_interval: float = 3.0
    action_interval: float = 4.5


class TelegramResponder:
    """The chat core's ``Responder`` for one command message."""

    def __init__(
        self,
        delivery: ReplyDelivery,
        chat_id: int,
        *,
        reply_to: int | None,
        action: str,
        policy: ProgressPolicy,
    ) -> None:
        self.delivery = delivery
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.action = action
        self.policy = policy
        self._lock = asyncio.Lock()
        self._status_id: int | None = None
        self._latest: str | None = None
        self._shown: str | None = None
        self._last_edit = float("-inf")
        self._done = False
        self._timer: asyncio.TimerHandle | None = None
        self._action_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_action(self) -> None:
        if self._done:
            return
        self._spawn(self._action())
        self._action_timer = asyncio.get_running_loop().call_later(self.policy.action_interval, self._send_action)

    async def _action(self) -> None:
        try:
            await self.delivery.bot.send_chat_action(self.chat_id, self.action)
        except (TelegramError, RuntimeError) as exc:  # RuntimeError: the bot is shutting down
            log.debug("chat action in %s failed: %s", self.chat_id, exc)

    async def show_progress(self, text: str) -> None:
        """The first progress line means work has begun (input is valid): the chat action starts
        (typing / upload_photo / upload_video, repeated until the reply); the line itself shows in
        the status message after ``status_delay``, edited at most once per ``edit_interval``."""
        if self._done:
            return
        if self._action_timer is None:
            self._send_action()
        self._latest = text
        if self._timer is not None:
            return
        delay = (
            self.policy.status_delay
            if self._status_id is None
            else self._last_edit + self.policy.edit_interval - time.monotonic()
        )
        if delay <= 0:
            await self._flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        self._spawn(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            text = self._latest
            if self._done or text is None or text == self._shown:
                return
            try:
                if self._status_id is None:
                    message = await self.delivery.bot.send_message(
                        self.chat_id, text, reply_to_message_id=self.reply_to, allow_sending_without_reply=True
                    )
                    self._status_id = message.message_id
                else:
                    await self.delivery.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self._status_id)
            except TelegramError as exc:
                log.warning("status update in %s failed: %s", self.chat_id, exc)
            self._shown = text
            self._last_edit = time.monotonic()

    async def deliver(self, reply: Reply) -> None:
        """Stop the progress, then post the reply (its first message replaces the status message)."""
        self._done = True
        for timer in (self._timer, self._action_timer):
            if timer is not None:
                timer.cancel()
        async with self._lock:  # a status message being sent right now finishes first
            status, self._status_id = self._status_id, None
        await self.delivery.deliver(
            self.chat_id, reply, status_message_id=status, reply_to=None if status else self.reply_to
        )
