"""What every platform does with a reply before it talks to its API, decided once.

``plan_delivery`` turns a ``Reply`` and the platform's ``PlatformLimits`` into a ``DeliveryPlan``:
the text messages, each within the platform's limit, with notes and the footer at the end; the
files to attach (the whole answer as a document when the text does not fit, then the reply's
media); a notice instead of every file over the platform's upload limit; and the story whose
storyboard goes with the answer (``storyboard_media`` draws it). Adapters keep only what is their
platform's: how a message, a file, an edit or a button is sent, and the limits themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.rendering import story_document
from bot.core.replies import Media, Reply, split_blocks
from bot.core.storyboard import STORYBOARD_FILENAME, STORYBOARD_MIME, storyboard_or_none
from services.story import Story, StorySets

MB = 1024 * 1024
WHOLE_ANSWER_FILENAME = "reply.txt"
WHOLE_STORY_FILENAME = "story.json"
STORYBOARD_CAPTION = "🗂️ Storyboard"


@dataclass(frozen=True)
class PlatformLimits:
    """What one platform allows in one answer, and how it shows an answer too long for its messages.

    ``file_after_messages``: an answer that needs more text messages than this also goes whole as
    a document; ``messages_beside_file``: how many of its text messages are still sent then (None:
    all of them). ``captions``: the platform shows each file's caption, so a text block that only
    repeats one is not sent again. ``upload_scope`` names whose upload limit a notice speaks of
    ("Telegram's", "this channel's"); ``upload_hint`` says how an operator can lift it.
    """

    text_chars: int
    upload_bytes: int
    upload_scope: str
    file_after_messages: int = 1
    messages_beside_file: int | None = None
    captions: bool = False
    upload_hint: str = ""


@dataclass
class DeliveryPlan:
    """One answer as a platform posts it: ``texts`` in order, then ``files`` (with the storyboard of
    ``storyboard`` where the platform draws one)."""

    texts: list[str]
    files: list[Media]
    storyboard: Story | None = None


def plan_delivery(reply: Reply, limits: PlatformLimits, *, text_layout: bool = True, cut: bool = False) -> DeliveryPlan:
    """Lay ``reply`` out within ``limits``.

    ``text_layout``: the reply's blocks go as text messages; False when the platform shows the
    result its own way (Discord's story embeds), and then ``cut`` says that layout left part of the
    story out, so the whole story is attached as a document.
    """
    has_document = any(media.kind == "document" for media in reply.media)
    notes: list[str] = []
    files: list[Media] = []
    body: list[str] = []
    if text_layout:
        captions = {media.caption for media in reply.media if media.caption} if limits.captions else set()
        blocks = [block for block in reply.blocks if block not in captions]
        body = split_blocks(blocks, limits.text_chars) if blocks else []
        if len(body) > limits.file_after_messages and not reply.is_error and not has_document:
            files.append(
                Media("document", reply.text.encode(), WHOLE_ANSWER_FILENAME, "The whole answer", "text/plain")
            )
            if limits.messages_beside_file is not None and len(body) > limits.messages_beside_file:
                body = body[: limits.messages_beside_file]
                notes.append(f"The whole answer is attached as {WHOLE_ANSWER_FILENAME}.")
    elif cut and not has_document and isinstance(reply.result, Story | StorySets):
        files.append(whole_story_document(reply.result))
        notes.append(f"Not all of the story fits here; the whole story is attached as {WHOLE_STORY_FILENAME}.")
    for media in reply.media:
        if len(media.data) > limits.upload_bytes:
            notes.append(too_large_notice(media, limits))
        else:
            files.append(media)
    tail = "\n".join([*notes, reply.footer] if reply.footer else notes)
    storyboard = reply.result if isinstance(reply.result, Story) and not reply.is_error else None
    return DeliveryPlan(texts=_with_tail(body, tail, limits.text_chars), files=files, storyboard=storyboard)


def _with_tail(texts: list[str], tail: str, limit: int) -> list[str]:
    """The notes and footer under the last message when they fit there, else in messages of their own."""
    if not tail:
        return texts
    if texts and len(texts[-1]) + 2 + len(tail) <= limit:
        return [*texts[:-1], f"{texts[-1]}\n\n{tail}"]
    return [*texts, *split_blocks([tail], limit)]


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB"


def too_large_notice(media: Media, limits: PlatformLimits) -> str:
    """What the chat reads instead of a file the platform would refuse."""
    text = (
        f"⚠️ The {media.kind} ({media.filename}, {_megabytes(len(media.data))}) is over {limits.upload_scope} "
        f"upload limit of {_megabytes(limits.upload_bytes)}, so it cannot be posted here."
    )
    return f"{text} {limits.upload_hint}" if limits.upload_hint else text


def whole_story_document(result: Story | StorySets) -> Media:
    """The whole story (or every take) as JSON, for when a platform's layout could not show all of it."""
    data = (
        story_document(result)
        if isinstance(result, Story)
        else result.model_dump_json(indent=2, exclude={"usage"}).encode()
    )
    return Media("document", data, WHOLE_STORY_FILENAME, "The whole story", "application/json")


async def storyboard_media(story: Story) -> Media | None:
    """The story's contact sheet as an image to attach; None when it could not be drawn."""
    board = await storyboard_or_none(story)
    if board is None:
        return None
    return Media("image", board, STORYBOARD_FILENAME, STORYBOARD_CAPTION, STORYBOARD_MIME)
