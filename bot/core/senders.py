"""Posting by address alone: each platform registers a ``ChatSender`` when it starts, so that work
finishing after its command (a resumed or late video, a scheduled trend post) is still delivered."""

from __future__ import annotations

from typing import Protocol

from bot.core.context import ChatRef
from bot.core.jobs import late_reply, outcome_reply
from bot.core.replies import Reply
from bot.core.scheduling import trend_post
from services.jobs import JobLate, JobOutcome
from services.schedules import ScheduleView
from services.trends import TrendReport


class ChatSender(Protocol):
    """Posts a reply to a chat by its address alone, with no live interaction or update."""

    async def send(self, chat: ChatRef, reply: Reply) -> None: ...


class ChatSenders(dict[str, ChatSender]):
    """The senders of the platforms this process serves, by platform name, and what is posted
    through them. Empty until the adapters start; a worker process registers send-only ones."""

    def sender_for(self, platform: str) -> ChatSender:
        sender = self.get(platform)
        if sender is None:
            raise LookupError(f"no {platform} sender in this process yet")
        return sender

    async def post(self, platform: str, chat_id: str, reply: Reply) -> None:
        """Post ``reply`` to a chat known only by its platform and id."""
        chat = ChatRef(platform=platform, id=chat_id, is_private=False)
        await self.sender_for(platform).send(chat, reply)

    async def deliver_outcome(self, outcome: JobOutcome) -> None:
        """A finished job: its media, or its error, in the chat that asked."""
        await self.post(outcome.address.platform, outcome.address.chat_id, await outcome_reply(outcome))

    async def notify_late(self, notice: JobLate) -> None:
        """A video past the deadline that no command is waiting for: it will follow."""
        reply = late_reply(notice.job_id, notice.elapsed_seconds, notice.kind)
        await self.post(notice.address.platform, notice.address.chat_id, reply)

    async def post_trends(self, view: ScheduleView, report: TrendReport) -> None:
        await self.post(view.platform, view.chat_id, trend_post(view, report))
