"""Where a command's progress and single final answer go on Discord.

An interaction's answer edits its deferred ``@original`` response (progress lines, then the
result) and adds follow-ups for what does not fit in one message. Its token lives 15 minutes: past
that (with a safety margin), or when Discord says the token is gone, the answer is posted to the
channel instead, through the same ``ChannelSender`` that resumed jobs and scheduled posts use. Every message pings nobody.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import discord

from bot.core.context import ChatRef
from bot.core.progress import ProgressPolicy, StatusLine
from bot.core.replies import Reply
from bot.discord.buttons import confirm_view
from bot.discord.messages import DEFAULT_UPLOAD_LIMIT, NO_MENTIONS, DiscordMessage, render_reply

log = logging.getLogger(__name__)

#: Discord shows "… is thinking" from the deferral on; a status line replaced within 2.5 s is not
#: worth a REST call, so progress reaches @original only once a command has run this long. Edits of
#: @original are not limited beyond discord.py's own rate-limit handling.
DISCORD_PROGRESS = ProgressPolicy(status_delay=2.5, edit_interval=0.0)
TOKEN_LIFETIME = datetime.timedelta(minutes=15)
TOKEN_MARGIN = datetime.timedelta(seconds=60)
#: Unknown Webhook, Invalid Webhook Token, Unknown interaction: the interaction can no longer answer.
EXPIRED_TOKEN_CODES = frozenset({10015, 50027, 10062})

#: The buttons for a reply (None for none), chosen by the command that produced it.
ViewFactory = Callable[[Reply], discord.ui.View | None]


class ChannelSender:
    """``ChatSender`` for Discord: posts a reply to a channel by id, with no live interaction.

    It needs only REST, so the same class serves the gateway bot and the send-only sender of a
    ``reelwright worker`` (a client that only logged in); ``ready`` says when it can post.
    """

    def __init__(self, client: discord.Client, ready: Callable[[], bool] | None = None) -> None:
        self.client = client
        self._ready = ready or (lambda: client.is_ready() and not client.is_closed())

    def is_ready(self) -> bool:
        """For the health endpoint: the client is connected (or logged in, send-only) and not closed."""
        return self._ready()

    def upload_limit(self, channel_id: int) -> int:
        channel = self.client.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        channel_id = int(chat.id)
        view = confirm_view(reply.confirmation) if reply.confirmation and not reply.is_error else None
        messages = await render_reply(reply, upload_limit=self.upload_limit(channel_id), view=view)
        await self.post(channel_id, messages)

    async def post(self, channel_id: int, messages: list[DiscordMessage]) -> None:
        channel = self.client.get_partial_messageable(channel_id)
        for message in messages:
            kwargs: dict[str, Any] = {}
            if message.view is not None:
                kwargs["view"] = message.view
            await channel.send(
                content=message.content,
                embeds=message.embeds,
                files=[item.to_file() for item in message.files],
                allowed_mentions=NO_MENTIONS,
                **kwargs,
            )


class InteractionResponder:
    """The core's ``Responder`` for one deferred interaction."""

    def __init__(
        self,
        interaction: discord.Interaction,
        sender: ChannelSender,
        views: ViewFactory | None = None,
        progress: ProgressPolicy = DISCORD_PROGRESS,
    ) -> None:
        self.interaction = interaction
        self.sender = sender
        self.views = views
        self.expires_at = interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        self.status = StatusLine(progress, self._edit_progress)
        self._token_dead = False

    @property
    def token_expired(self) -> bool:
        return self._token_dead or discord.utils.utcnow() >= self.expires_at

    def _is_dead_token(self, error: discord.HTTPException) -> bool:
        """Discord refused the interaction token: remember it, so the answer goes to the channel."""
        if error.code in EXPIRED_TOKEN_CODES or error.status == 401:
            self._token_dead = True
        return self._token_dead

    async def show_progress(self, text: str) -> None:
        if not self.token_expired:
            await self.status.update(text)

    async def _edit_progress(self, text: str) -> None:
        if self.token_expired:
            return
        try:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            if not self._is_dead_token(exc):
                raise

    async def deliver(self, reply: Reply) -> None:
        await self.status.finish()  # keeps a progress edit from landing after the answer
        view = self.views(reply) if self.views is not None and not reply.is_error else None
        messages = await render_reply(reply, upload_limit=self.interaction.filesize_limit, view=view)
        if self.token_expired or self.interaction.channel_id is None:
            await self._to_channel(messages)
            return
        for index, message in enumerate(messages):
            try:
                if index == 0:
                    await self._edit_original(message)
                else:
                    await self._follow_up(message)
            except discord.HTTPException as exc:
                if not self._is_dead_token(exc):
                    raise
                log.info("interaction token expired while answering; posting to the channel")
                await self._to_channel(messages[index:])
                return

    async def _to_channel(self, messages: list[DiscordMessage]) -> None:
        channel_id = self.interaction.channel_id
        if channel_id is None:
            raise RuntimeError("the interaction expired and has no channel to post to")
        await self.sender.post(channel_id, messages)

    async def _edit_original(self, message: DiscordMessage) -> None:
        kwargs: dict[str, Any] = {}
        if message.view is not None:
            kwargs["view"] = message.view
        await self.interaction.edit_original_response(
            content=message.content,
            embeds=message.embeds,
            attachments=[item.to_file() for item in message.files],
            allowed_mentions=NO_MENTIONS,
            **kwargs,
        )

    async def _follow_up(self, message: DiscordMessage) -> None:
        kwargs: dict[str, Any] = {}
        if message.view is not None:
            kwargs["view"] = message.view
        await self.interaction.followup.send(
            content=message.content or discord.utils.MISSING,
            embeds=message.embeds,
            files=[item.to_file() for item in message.files],
            allowed_mentions=NO_MENTIONS,
            wait=True,
            **kwargs,
        )
