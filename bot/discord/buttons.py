"""Persistent buttons under a story: "Video of segment N", "Thumbnail", "Regenerate".

They are ``discord.ui.DynamicItem``s: the client registers their ``custom_id`` pattern at start-up,
so a press works on any message, also after a restart, with no stored view. The state lives in the
``custom_id`` (the action, the segment number, the command and its segment count) and in the story
embed of the message pressed (shot prompt, clip length, title, idea), which Discord sends with every
press. A press becomes an ordinary core invocation (/video, /thumbnail, /story), so no command
logic lives here.

"✅ Go ahead" under a cost question works the same way: its ``custom_id`` carries the confirmation
code, and a press is ``/confirm <code>`` run by the user who pressed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import discord

from bot.core.replies import Reply
from bot.discord.messages import idea_from_embed, segment_from_embed
from services.story import Story

log = logging.getLogger(__name__)

MAX_VIDEO_BUTTONS = 8
BUTTONS_PER_ROW = 5
REGENERABLE = ("story", "longstory")


class ButtonRunner(Protocol):
    async def run_invocation(
        self,
        interaction: discord.Interaction,
        command: str,
        options: dict[str, Any],
        *,
        ephemeral: bool = False,
        after_defer: Callable[[], Awaitable[None]] | None = None,
    ) -> None: ...

    async def report_failure(self, interaction: discord.Interaction, error: BaseException) -> None: ...


class StoryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"rw:(?P<action>video|thumb|regen):(?P<arg>[a-z0-9.]{0,40})",
):
    def __init__(self, action: str, arg: str = "", *, label: str = "", row: int | None = None) -> None:
        style = discord.ButtonStyle.primary if action == "video" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label or action, style=style, custom_id=f"rw:{action}:{arg}", row=row))
        self.action = action
        self.arg = arg

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StoryButton:
        return cls(match["action"], match["arg"])

    async def callback(self, interaction: discord.Interaction) -> None:
        runner: ButtonRunner = interaction.client.bridge  # type: ignore[attr-defined]
        try:
            command, options = press_to_invocation(self.action, self.arg, interaction.message)
            await runner.run_invocation(interaction, command, options)
        except Exception as exc:
            # Buttons are not app commands, so tree.on_error never sees them: report the same way.
            await runner.report_failure(interaction, exc)


CONFIRM_LABEL = "✅ Go ahead"
CONFIRM_TEMPLATE = r"rw:confirm:(?P<code>[0-9A-Za-z]{1,20})"


class ConfirmButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CONFIRM_TEMPLATE):
    """The "Go ahead" button under a cost question: a press is ``/confirm <code>`` run by whoever pressed.

    The core decides: the code belongs to the user who asked, is taken once, and expires; anyone
    else (or a second press) gets the core's own refusal. A press by someone other than the user
    the question answered is deferred ephemerally, so that refusal is shown to the presser only.
    The asker's press also takes the button off the question (one press only, as on Telegram).
    """

    def __init__(self, code: str) -> None:
        super().__init__(
            discord.ui.Button(label=CONFIRM_LABEL, style=discord.ButtonStyle.success, custom_id=f"rw:confirm:{code}")
        )
        self.code = code

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ConfirmButton:
        return cls(match["code"])

    async def callback(self, interaction: discord.Interaction) -> None:
        runner: ButtonRunner = interaction.client.bridge  # type: ignore[attr-defined]
        asker = pressed_by_asker(interaction)
        try:
            await runner.run_invocation(
                interaction,
                "confirm",
                {"code": self.code},
                ephemeral=not asker,
                after_defer=partial(remove_buttons, interaction) if asker else None,
            )
        except Exception as exc:
            await runner.report_failure(interaction, exc)


def pressed_by_asker(interaction: discord.Interaction) -> bool:
    """Whether the presser is the user whose command the message answers (True when unknown)."""
    message = interaction.message
    metadata = message.interaction_metadata if message is not None else None
    return metadata is None or metadata.user.id == interaction.user.id


async def remove_buttons(interaction: discord.Interaction) -> None:
    """Take the buttons off the message pressed; best effort (the core refuses a second press anyway)."""
    message = interaction.message
    if message is None:
        return
    try:
        await message.edit(view=None)
    except discord.HTTPException as exc:
        log.info("could not remove the buttons from message %s: %s", message.id, exc)


def confirm_view(code: str) -> discord.ui.View | None:
    """The "Go ahead" button for a cost question (None for a code a custom_id cannot carry)."""
    if re.fullmatch(CONFIRM_TEMPLATE, f"rw:confirm:{code}") is None:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(ConfirmButton(code))
    return view


def reply_view(command: str, reply: Reply) -> discord.ui.View | None:
    """The buttons for any reply: "Go ahead" under a cost question, the story buttons under a story."""
    if reply.is_error:
        return None
    if reply.confirmation:
        return confirm_view(reply.confirmation)
    return story_view(command, reply)


def press_to_invocation(action: str, arg: str, message: discord.Message | None) -> tuple[str, dict[str, Any]]:
    """The core command and typed options a press stands for."""
    embed = message.embeds[0] if message is not None and message.embeds else None
    if action == "video":
        number = int(arg)
        segment = segment_from_embed(embed, number) if embed is not None else None
        if segment is None:
            return "video", {"segment": number}
        prompt, seconds = segment
        options: dict[str, Any] = {"prompt": prompt}
        if str(seconds) in ("4", "6", "8"):
            options["duration"] = str(seconds)
        return "video", options
    if action == "thumb":
        return "thumbnail", {"title": embed.title} if embed is not None and embed.title else {}
    command, _, segments = arg.partition(".")
    idea = idea_from_embed(embed) if embed is not None else None
    if command not in REGENERABLE:
        command = "story"
    if idea is None:
        return command, {}  # the core answers with what is missing and the usage
    return command, {"idea": idea, "segments": int(segments)} if segments.isdigit() else {"idea": idea}


def story_view(command: str, reply: Reply) -> discord.ui.View | None:
    """The buttons for a story reply (None for anything else)."""
    story = reply.result
    if not isinstance(story, Story) or not story.segments:
        return None
    view = discord.ui.View(timeout=None)
    count = min(len(story.segments), MAX_VIDEO_BUTTONS)
    for number in range(1, count + 1):
        view.add_item(StoryButton("video", str(number), label=f"Video of segment {number}", row=(number - 1) // 5))
    last_row = (count - 1) // BUTTONS_PER_ROW + 1
    view.add_item(StoryButton("thumb", "", label="Thumbnail", row=last_row))
    if command in REGENERABLE:
        view.add_item(StoryButton("regen", f"{command}.{len(story.segments)}", label="Regenerate", row=last_row))
    return view
