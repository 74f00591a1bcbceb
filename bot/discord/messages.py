"""A core ``Reply`` laid out as Discord messages that respect every Discord limit.

Stories become embeds (one field per segment: 25 fields, 1,024 characters per field, 6,000 per
message, 10 embeds per message); anything that had to be cut travels whole as a ``.json`` (stories)
or ``.txt`` (long text) attachment. Files are packed under the interaction's upload limit, and a
file over it is replaced by a clear note instead of a failed upload.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import discord

from bot.core.rendering import story_document
from bot.core.replies import Media, Reply, split_blocks
from bot.core.storyboard import storyboard_or_none
from services.story import Story, StorySets

CONTENT_LIMIT = 2000
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELDS_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
EMBED_TOTAL_LIMIT = 6000
EMBEDS_PER_MESSAGE = 10
FILES_PER_MESSAGE = 10
TEXT_MESSAGES_BEFORE_FILE = 3
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024

#: Marks that let a button press read its story back from the message it sits on.
IDEA_PREFIX = "💡 "
SHOT_PREFIX = "🎥 "
_FIELD_NAME = re.compile(r"^(\d+) · (\d+) s$")

NO_MENTIONS = discord.AllowedMentions.none()


@dataclass
class OutgoingFile:
    """File bytes kept apart from ``discord.File`` (whose stream is consumed by one upload)."""

    filename: str
    data: bytes = field(repr=False)

    def to_file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


@dataclass
class DiscordMessage:
    """One message to post or edit in."""

    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[OutgoingFile] = field(default_factory=list)
    view: discord.ui.View | None = None


def _cut(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[: limit - 1].rstrip() + "…", True


def story_embed(story: Story, heading: str = "") -> tuple[discord.Embed, bool]:
    """The story as one embed; the flag says whether anything had to be left out."""
    title, cut_title = _cut(f"{heading}{story.title}", EMBED_TITLE_LIMIT)
    summary = f"{len(story.segments)} segments · {story.total_seconds} s\n{IDEA_PREFIX}{story.idea}"
    description, cut_description = _cut(summary, EMBED_DESCRIPTION_LIMIT)
    embed = discord.Embed(title=title, description=description, colour=discord.Colour.blurple())
    overflow = cut_title or cut_description or len(story.segments) > EMBED_FIELDS_LIMIT
    for segment in story.segments[:EMBED_FIELDS_LIMIT]:
        value, cut_value = _cut(f"{segment.narration}\n{SHOT_PREFIX}{segment.visual_prompt}", FIELD_VALUE_LIMIT)
        overflow = overflow or cut_value
        embed.add_field(name=f"{segment.number} · {segment.duration_seconds} s", value=value, inline=False)
    while len(embed) > EMBED_TOTAL_LIMIT and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
        overflow = True
    return embed, overflow


def segment_from_embed(embed: discord.Embed, number: int) -> tuple[str, int] | None:
    """The shot prompt and clip length of segment ``number`` as ``story_embed`` wrote them."""
    for embed_field in embed.fields:
        match = _FIELD_NAME.match(embed_field.name or "")
        if match and int(match.group(1)) == number and embed_field.value:
            _, _, shot = embed_field.value.partition(f"\n{SHOT_PREFIX}")
            if shot and not shot.endswith("…"):
                return shot, int(match.group(2))
    return None


def idea_from_embed(embed: discord.Embed) -> str | None:
    """The story's idea as ``story_embed`` wrote it (None when it was cut)."""
    _, _, idea = (embed.description or "").partition(f"\n{IDEA_PREFIX}")
    return idea if idea and not idea.endswith("…") else None


def _pack_embeds(embeds: list[discord.Embed]) -> list[list[discord.Embed]]:
    groups: list[list[discord.Embed]] = []
    size = 0
    for embed in embeds:
        if not groups or len(groups[-1]) >= EMBEDS_PER_MESSAGE or size + len(embed) > EMBED_TOTAL_LIMIT:
            groups.append([])
            size = 0
        groups[-1].append(embed)
        size += len(embed)
    return groups


def _size(size_bytes: int) -> str:
    return f"{size_bytes / (1024 * 1024):.1f} MB"


async def render_reply(
    reply: Reply, *, upload_limit: int = DEFAULT_UPLOAD_LIMIT, view: discord.ui.View | None = None
) -> list[DiscordMessage]:
    """Lay ``reply`` out as messages; the first carries ``view`` (the story buttons)."""
    messages: list[DiscordMessage] = []
    files: list[OutgoingFile] = []
    notes: list[str] = []
    media = list(reply.media)
    has_document = any(item.kind == "document" for item in media)
    stories: list[tuple[Story, str]] = []
    if isinstance(reply.result, Story):
        stories = [(reply.result, "")]
    elif isinstance(reply.result, StorySets):
        stories = [(story, f"Take {number}: ") for number, story in enumerate(reply.result.sets, start=1)]
    if stories and not reply.is_error:
        embeds: list[discord.Embed] = []
        overflow = False
        for story, heading in stories:
            embed, cut = story_embed(story, heading)
            embeds.append(embed)
            overflow = overflow or cut
        board = await storyboard_or_none(reply.result) if isinstance(reply.result, Story) else None
        if board is not None:
            files.append(OutgoingFile("storyboard.jpg", board))
            embeds[0].set_image(url="attachment://storyboard.jpg")
        if overflow and not has_document:
            document = (
                story_document(reply.result)
                if isinstance(reply.result, Story)
                else reply.result.model_dump_json(indent=2, exclude={"usage"}).encode()  # type: ignore[union-attr]
            )
            media.append(Media("document", document, "story.json", "The whole story", "application/json"))
            notes.append("The embed shows what fits; the whole story is attached as story.json.")
        groups = _pack_embeds(embeds)
        messages = [DiscordMessage(embeds=group) for group in groups]
    else:
        chunks = split_blocks(reply.blocks, CONTENT_LIMIT)
        if len(chunks) > TEXT_MESSAGES_BEFORE_FILE:
            chunks = chunks[:1]
            media.append(Media("document", reply.text.encode(), "reply.txt", "The whole answer", "text/plain"))
            notes.append("The whole answer is attached as reply.txt.")
        messages = [DiscordMessage(content=chunk) for chunk in chunks] or [DiscordMessage(content="…")]
    for item in media:
        if len(item.data) > upload_limit:
            notes.append(
                f"⚠️ The {item.kind} ({item.filename}, {_size(len(item.data))}) is over this channel's upload limit "
                f"of {_size(upload_limit)}, so it cannot be posted here."
            )
        else:
            files.append(OutgoingFile(item.filename, item.data))
    tail = "\n".join([*notes, reply.footer] if reply.footer else notes)
    if tail:
        last = messages[-1]
        joined = f"{last.content}\n\n{tail}" if last.content else tail
        if len(joined) <= CONTENT_LIMIT:
            last.content = joined
        else:
            messages.append(DiscordMessage(content=_cut(tail, CONTENT_LIMIT)[0]))
    _attach_files(messages, files, upload_limit)
    messages[0].view = view
    return messages


def _attach_files(messages: list[DiscordMessage], files: list[OutgoingFile], upload_limit: int) -> None:
    """The first message takes what fits (≤ 10 files, ≤ the upload limit), follow-ups the rest."""
    target = messages[0]
    used = 0
    for item in files:
        if len(target.files) >= FILES_PER_MESSAGE or used + len(item.data) > upload_limit:
            target = DiscordMessage()
            messages.append(target)
            used = 0
        target.files.append(item)
        used += len(item.data)
