"""Telegram messages in: which command, its raw argument text, who asked, and the attached image.

Only the translation lives here; arguments are parsed and validated by the chat core from the text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from telegram import ChatMember, File, Message, MessageEntity, User
from telegram.error import BadRequest
from telegram.request import BaseRequest

from bot.core.context import ChatRef, IncomingImage, Invocation, UserRef, regular_file_chunks
from bot.telegram.request import AiohttpRequest
from connectors.errors import UserInputError

PLATFORM = "telegram"
#: The Bot API refuses ``getFile`` above this size on api.telegram.org (a self-hosted server lifts it).
CLOUD_DOWNLOAD_LIMIT = 20 * 1024 * 1024
#: Telegram clients send /start when a user opens the bot; it means "what can you do".
ALIASES = {"start": "help"}


@dataclass(frozen=True)
class ParsedCommand:
    name: str
    text: str
    addressed: bool  # /cmd@thisbot: the user named this bot explicitly


def parse_command(message: Message, bot_username: str) -> ParsedCommand | None:
    """``/story@bot a dragon segments=8`` → ("story", "a dragon segments=8"); None when not a command
    or when it names another bot. The command may be the text or a photo/document caption."""
    text = message.text if message.text is not None else message.caption
    entities = message.entities if message.text is not None else message.caption_entities
    if not text or not text.startswith("/"):
        return None
    first = next((e for e in entities if e.offset == 0), None)
    if first is not None and first.type == MessageEntity.BOT_COMMAND:
        token = text[: first.length]
    else:
        token = text.split(maxsplit=1)[0]
    name, _, mention = token[1:].partition("@")
    if mention and mention.lower() != bot_username.lower():
        return None
    if not name:
        return None
    name = name.lower()
    return ParsedCommand(ALIASES.get(name, name), text[len(token) :].strip(), bool(mention))


def invocation_for(
    message: Message,
    parsed: ParsedCommand,
    *,
    download_limit: int | None = CLOUD_DOWNLOAD_LIMIT,
    upload_limit: int | None = None,
    sender: User | None = None,
) -> Invocation:
    """The chat-core invocation for a command message; the image comes from it or the replied-to one.

    ``upload_limit``: the most bytes the bot may send in one file here (the Bot API server's limit).
    ``sender``: who acted, when not the message's author (a button pressed under a bot message)."""
    sender = sender or message.from_user
    user = UserRef(
        platform=PLATFORM,
        id=str(sender.id if sender is not None else message.chat.id),
        name=(sender.username or sender.first_name) if sender is not None else "",
    )
    chat = ChatRef(platform=PLATFORM, id=str(message.chat.id), is_private=message.chat.type == "private")
    image = image_of(message, download_limit)
    if image is None and message.reply_to_message is not None:
        image = image_of(message.reply_to_message, download_limit)
    return Invocation(
        command=parsed.name,
        user=user,
        chat=chat,
        text=parsed.text,
        image=image,
        is_admin=_admin_check(message, sender),
        upload_limit=upload_limit,
    )


def _admin_check(message: Message, sender: User | None) -> Callable[[], Awaitable[bool]]:
    """Telegram's part of the admin rule (``is_chat_admin``): a group's administrators and owner."""

    async def is_admin() -> bool:
        if sender is None:
            return False
        member = await message.get_bot().get_chat_member(message.chat.id, sender.id)
        return member.status in (ChatMember.ADMINISTRATOR, ChatMember.OWNER)

    return is_admin


def image_of(message: Message, download_limit: int | None) -> IncomingImage | None:
    """The largest photo size, or a document (any type: services check images by content)."""
    mime: str | None
    if message.photo:
        largest = message.photo[-1]
        file_id, size, filename, mime = largest.file_id, largest.file_size, "photo.jpg", "image/jpeg"
    elif message.document is not None:
        doc = message.document
        file_id, size, mime = doc.file_id, doc.file_size, doc.mime_type
        filename = doc.file_name or "document"
    else:
        return None
    bot = message.get_bot()

    async def stream() -> AsyncIterator[bytes]:
        if download_limit is not None and size is not None and size > download_limit:
            raise UserInputError(
                f"That file is {size / 1024 / 1024:.1f} MB; Telegram lets bots download files up to "
                f"{download_limit // 1024 // 1024} MB. Please send a smaller image."
            )
        try:
            telegram_file = await bot.get_file(file_id)
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise UserInputError(
                    "That file is too big for a bot to download (20 MB). Please send a smaller image."
                ) from exc
            raise
        async for chunk in file_chunks(bot.request, telegram_file):
            yield chunk

    return IncomingImage(filename=filename, stream=stream, size=size, content_type=mime)


async def file_chunks(request: BaseRequest, telegram_file: File) -> AsyncIterator[bytes]:
    """A file from ``getFile`` as a stream: over the bot's aiohttp transport (a short-lived one when the
    bot uses another), or from disk when a local Bot API server hands out a path."""
    if not telegram_file.file_path:
        raise UserInputError("Telegram did not give me that file. Please send it again.")
    parts = urlsplit(telegram_file.file_path)
    if parts.scheme not in ("http", "https"):
        async for chunk in regular_file_chunks(Path(telegram_file.file_path)):
            yield chunk
        return
    url = urlunsplit(parts._replace(path=quote(parts.path)))
    if isinstance(request, AiohttpRequest):
        async for chunk in request.stream(url):
            yield chunk
        return
    transport = AiohttpRequest(1)
    await transport.initialize()
    try:
        async for chunk in transport.stream(url):
            yield chunk
    finally:
        await transport.shutdown()
