"""Progress for one command on Telegram: chat actions while waiting, one status message that the
core's ``StatusLine`` throttles, and the final reply in place of that status message."""

from __future__ import annotations

import asyncio
import logging

from telegram.error import TelegramError

from bot.core.progress import ProgressPolicy, StatusLine
from bot.core.replies import Reply
from bot.telegram.delivery import ReplyDelivery

log = logging.getLogger(__name__)

#: A chat action ("typing…", "sending video…") lasts about 5 s on clients, so it is repeated this often.
CHAT_ACTION_SECONDS = 4.5


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
        self.status = StatusLine(policy, self._show_status)
        self._status_id: int | None = None
        self._done = False
        self._action_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _send_action(self) -> None:
        if self._done:
            return
        task = asyncio.get_running_loop().create_task(self._action())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._action_timer = asyncio.get_running_loop().call_later(CHAT_ACTION_SECONDS, self._send_action)

    async def _action(self) -> None:
        try:
            await self.delivery.bot.send_chat_action(self.chat_id, self.action)
        except (TelegramError, RuntimeError) as exc:  # RuntimeError: the bot is shutting down
            log.debug("chat action in %s failed: %s", self.chat_id, exc)

    async def show_progress(self, text: str) -> None:
        """The first progress line means work has begun (input is valid): the chat action starts
        (typing / upload_photo / upload_video, repeated until the reply); the line itself goes to
        the status message when the ``StatusLine`` lets it."""
        if self._done:
            return
        if self._action_timer is None:
            self._send_action()
        await self.status.update(text)

    async def _show_status(self, text: str) -> None:
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

    async def deliver(self, reply: Reply) -> None:
        """Stop the progress, then post the reply (its first message replaces the status message)."""
        self._done = True
        if self._action_timer is not None:
            self._action_timer.cancel()
        await self.status.finish()  # a status message being sent right now finishes first
        status, self._status_id = self._status_id, None
        await self.delivery.deliver(
            self.chat_id, reply, status_message_id=status, reply_to=None if status else self.reply_to
        )
