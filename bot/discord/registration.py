"""Slash commands derived from the chat core's declarations, never written by hand.

discord.py builds an app command's options from its callback's signature. So for each core
``Command`` we create one generic callback and give it an explicit ``__signature__`` (which
``inspect.signature`` honours) whose parameters carry discord.py's own annotations: ``Range[int,
min, max]`` for INTEGER, ``Literal[...]`` for CHOICE (Discord shows the choices), ``Range[str, None,
max_length]`` for TEXT with a limit, ``discord.Attachment`` for IMAGE; optional options default to
None so the core fills its own defaults. Descriptions go through the public ``app_commands.describe``.
A new option in ``bot/core/catalog.py`` therefore appears on Discord with no change here.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import discord
from discord import app_commands

from bot.core.commands import Command, CommandSet, Option, OptionKind

DESCRIPTION_LIMIT = 100
TEXT_OPTION_LIMIT = 6000

CommandRunner = Callable[[discord.Interaction, Command, dict[str, Any]], Awaitable[None]]


def _description(text: str) -> str:
    text = " ".join(text.split()) or "…"
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


def option_annotation(option: Option) -> Any:
    """discord.py's annotation for one core option (type, range, choices or attachment)."""
    if option.kind is OptionKind.INTEGER:
        if option.min_value is None and option.max_value is None:
            return int
        return app_commands.Range[int, option.min_value, option.max_value]
    if option.kind is OptionKind.CHOICE:
        return Literal.__getitem__(tuple(option.choices))  # Literal["4", "6", "8"]
    if option.kind is OptionKind.IMAGE:
        return discord.Attachment
    return app_commands.Range[str, None, min(option.max_length or TEXT_OPTION_LIMIT, TEXT_OPTION_LIMIT)]


def _signature(command: Command) -> inspect.Signature:
    parameters = [
        inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)
    ]
    # Discord wants required options first; the core's order is kept otherwise.
    for option in sorted(command.options, key=lambda opt: not opt.required):
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=option_annotation(option),
                default=inspect.Parameter.empty if option.required else None,
            )
        )
    return inspect.Signature(parameters)


def slash_command(command: Command, run: CommandRunner) -> app_commands.Command[Any, ..., None]:
    """One app command whose callback hands the typed option values to ``run``."""

    async def callback(interaction: discord.Interaction, **values: Any) -> None:
        await run(interaction, command, values)

    callback.__signature__ = _signature(command)  # type: ignore[attr-defined]
    callback.__name__ = callback.__qualname__ = f"slash_{command.name}"
    described = app_commands.describe(**{opt.name: _description(opt.help) for opt in command.options})(callback)
    return app_commands.Command(name=command.name, description=_description(command.summary), callback=described)


def register_commands(
    tree: app_commands.CommandTree[Any],
    commands: CommandSet,
    run: CommandRunner,
    guilds: list[discord.Object] | None = None,
) -> list[app_commands.Command[Any, ..., None]]:
    """Add every catalogue command to ``tree``: globally, or to each of ``guilds`` when given."""
    added = []
    for command in commands:
        slash = slash_command(command, run)
        if guilds:
            tree.add_command(slash, guilds=guilds)
        else:
            tree.add_command(slash)
        added.append(slash)
    return added
