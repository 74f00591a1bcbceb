"""A core ``Reply`` laid out as Discord messages that respect every Discord limit.

Stories become embeds (one field per segment: 25 fields, 1,024 characters per field, 6,000 per
message, 10 embeds per message), with the storyboard as the first embed's image. What goes besides
(the whole story or answer as a file when it does not fit, notices for files over the channel's
upload limit, the footer) is the chat core's ``plan_delivery``; here files are packed into
messages (10 each, under the upload limit).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import discord

from bot.core.delivery import PlatformLimits, plan_delivery, storyboard_media
from bot.core.replies import Media, Reply
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


def reply_limits(upload_limit: int) -> PlatformLimits:
    """Discord's limits for the chat core: a long text answer shows its first message and comes
    whole as a file once it would take more than three."""
    return PlatformLimits(
        text_chars=CONTENT_LIMIT,
        upload_bytes=upload_limit,
        upload_scope="this channel's",
        file_after_messages=TEXT_MESSAGES_BEFORE_FILE,
        messages_beside_file=1,
    )


async def render_reply(
    reply: Reply, *, upload_limit: int = DEFAULT_UPLOAD_LIMIT, view: discord.ui.View | None = None
) -> list[DiscordMessage]:
    """Lay ``reply`` out as messages; the first carries ``view`` (the story buttons)."""
    stories: list[tuple[Story, str]] = []
    if isinstance(reply.result, Story):
        stories = [(reply.result, "")]
    elif isinstance(reply.result, StorySets):
        stories = [(story, f"Take {number}: ") for number, story in enumerate(reply.result.sets, start=1)]
    as_embeds = bool(stories) and not reply.is_error
    embeds: list[discord.Embed] = []
    cut = False
    for story, heading in stories if as_embeds else []:
        embed, overflow = story_embed(story, heading)
        embeds.append(embed)
        cut = cut or overflow
    plan = plan_delivery(reply, reply_limits(upload_limit), text_layout=not as_embeds, cut=cut)
    files: list[Media] = []
    storyboard = await storyboard_media(plan.storyboard) if plan.storyboard is not None and as_embeds else None
    if storyboard is not None:
        files.append(storyboard)
        embeds[0].set_image(url=f"attachment://{storyboard.filename}")
    files.extend(plan.files)
    messages = [DiscordMessage(embeds=group) for group in _pack_embeds(embeds)]
    texts = list(plan.texts)
    if messages and texts:
        messages[-1].content = texts.pop(0)
    messages += [DiscordMessage(content=text) for text in texts]
    if not messages:
        messages = [DiscordMessage(content="…")]
    _attach_files(messages, [OutgoingFile(item.filename, item.data) for item in files], upload_limit)
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
