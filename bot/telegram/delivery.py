"""Replies out: a platform-neutral ``Reply`` posted to a Telegram chat.

The chat core's ``plan_delivery`` decides what goes (text within Telegram's 4096 characters, the
whole answer as a file when it takes several messages, notices for files over the upload limit,
the storyboard); this module only says how Telegram sends it. Text is plain (no parse mode), so
model output full of ``*_[]<>&`` can never fail to parse. Media go out with the right method and a
fallback (photo → document, video → document). One lock per chat keeps the messages of one reply
together and in order.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import MessageLimit
from telegram.error import BadRequest

from bot.core.context import ChatRef
from bot.core.delivery import MB, PlatformLimits, plan_delivery, storyboard_media
from bot.core.replies import Media, Reply
from bot.runtime import ChatSender

log = logging.getLogger(__name__)

TEXT_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)
CAPTION_LIMIT = int(MessageLimit.CAPTION_LENGTH)


@dataclass(frozen=True)
class UploadLimits:
    """Bot API upload limits: the cloud API's, or a self-hosted server's (2,000 MB for everything)."""

    photo: int = 10 * MB
    other: int = 50 * MB
    self_hosted: bool = False

    @classmethod
    def for_server(cls, self_hosted: bool) -> UploadLimits:
        return cls(photo=10 * MB, other=2000 * MB, self_hosted=True) if self_hosted else cls()

    def for_replies(self) -> PlatformLimits:
        """What the chat core lays a reply out for: every block sent, the whole answer also as a
        file once it takes more than one message, captions on the files."""
        hint = "" if self.self_hosted else "A self-hosted Bot API server (TELEGRAM_API_BASE_URL) lifts it to 2,000 MB."
        return PlatformLimits(
            text_chars=TEXT_LIMIT,
            upload_bytes=self.other,
            upload_scope="Telegram's",
            file_after_messages=1,
            captions=True,
            upload_hint=hint,
        )


#: Callback data of the button under a cost question; pressing it is ``/confirm <token>``.
CONFIRM_PREFIX = "confirm:"


def confirm_button(token: str) -> InlineKeyboardMarkup:
    """The core's cost question answered with one tap instead of typing ``/confirm <token>``."""
    return InlineKeyboardMarkup([[InlineKeyboardButton("✅ Go ahead", callback_data=f"{CONFIRM_PREFIX}{token}")]])


def _caption(text: str) -> str:
    return text if len(text) <= CAPTION_LIMIT else text[: CAPTION_LIMIT - 1] + "…"


class ReplyDelivery:
    """Posts replies to chats through one ``Bot``, for live commands and for ``TelegramSender``."""

    def __init__(self, bot: Bot, limits: UploadLimits, *, storyboards: bool = True) -> None:
        self.bot = bot
        self.limits = limits
        self.reply_limits = limits.for_replies()
        self.storyboards = storyboards
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock_for(self, chat_id: int) -> asyncio.Lock:
        """The chat's lock: while one reply is being posted, another waits, so replies never interleave."""
        lock = self._locks.get(chat_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[chat_id] = lock
        return lock

    async def deliver(
        self, chat_id: int, reply: Reply, *, status_message_id: int | None = None, reply_to: int | None = None
    ) -> None:
        """Post ``reply``; the first text message replaces the status message when there is one."""
        plan = plan_delivery(reply, self.reply_limits)
        texts = plan.texts
        async with self.lock_for(chat_id):
            status = status_message_id
            for number, text in enumerate(texts, start=1):
                markup = confirm_button(reply.confirmation) if reply.confirmation and number == len(texts) else None
                if status is not None:
                    if await self._edit(chat_id, status, text, markup):
                        status = None
                        continue
                    status = None
                await self.bot.send_message(
                    chat_id, text, reply_to_message_id=reply_to, allow_sending_without_reply=True, reply_markup=markup
                )
                reply_to = None
            if status is not None:
                await self._delete(chat_id, status)
            # Drawn after the text is out (the creator reads while it draws), off the event loop.
            if self.storyboards and plan.storyboard is not None:
                storyboard = await storyboard_media(plan.storyboard)
                if storyboard is not None:
                    await self._send_media(chat_id, storyboard)
            for media in plan.files:
                await self._send_media(chat_id, media)

    async def _edit(self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None) -> bool:
        try:
            await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id, reply_markup=markup)
        except BadRequest as exc:
            if "not modified" in exc.message.lower():
                return True
            log.info("could not edit the status message in %s (%s); sending a new one", chat_id, exc.message)
            return False
        return True

    async def _delete(self, chat_id: int, message_id: int) -> None:
        try:
            await self.bot.delete_message(chat_id, message_id)
        except BadRequest as exc:
            log.info("could not delete the status message in %s (%s)", chat_id, exc.message)

    async def _send_media(self, chat_id: int, media: Media) -> None:
        size = len(media.data)
        caption = _caption(media.caption)
        if media.kind == "image" and size <= self.limits.photo:
            try:
                await self.bot.send_photo(chat_id, media.data, caption=caption, filename=media.filename)
                return
            except BadRequest as exc:
                log.info("sendPhoto refused %s (%s); sending it as a document", media.filename, exc.message)
        elif media.kind == "video":
            try:
                await self.bot.send_video(
                    chat_id, media.data, caption=caption, filename=media.filename, supports_streaming=True
                )
                return
            except BadRequest as exc:
                log.info("sendVideo refused %s (%s); sending it as a document", media.filename, exc.message)
        await self.bot.send_document(chat_id, media.data, caption=caption, filename=media.filename)


class TelegramSender(ChatSender):
    """``Runtime.senders["telegram"]``: posts later results (resumed jobs, schedules) by chat id."""

    def __init__(self, delivery: ReplyDelivery, ready: Callable[[], bool] = lambda: True) -> None:
        self.delivery = delivery
        self._ready = ready

    def is_ready(self) -> bool:
        """For the health endpoint: the bot is started and can post."""
        return self._ready()

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        await self.delivery.deliver(int(chat.id), reply)
