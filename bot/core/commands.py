"""Commands are declared once here (name, help, typed options, handler); every adapter derives
its platform registration (Telegram setMyCommands, Discord app commands, console help) from these
declarations, and text arguments are parsed and validated here, not in any adapter.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from connectors.errors import UserInputError
from services.config import ServiceConfig
from services.prompts import storable
from services.usage import Usage

if TYPE_CHECKING:
    from bot.core.context import CommandContext
    from bot.core.replies import Reply


class OptionKind(Enum):
    TEXT = "text"
    INTEGER = "integer"
    CHOICE = "choice"
    IMAGE = "image"


@dataclass(frozen=True)
class Option:
    """One typed command option. ``rest`` marks the free text after the command (the prompt)."""

    name: str
    kind: OptionKind
    help: str
    required: bool = False
    default: Any = None
    min_value: int | None = None
    max_value: int | None = None
    choices: tuple[str, ...] = ()
    rest: bool = False
    max_length: int | None = None

    def convert(self, raw: Any) -> Any:
        """Turn a raw value (text from a chat line, or a typed value from Discord) into a valid one."""
        if self.kind is OptionKind.INTEGER:
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise UserInputError(f"{self.name} must be a whole number (got {raw!r}).") from None
            if (self.min_value is not None and value < self.min_value) or (
                self.max_value is not None and value > self.max_value
            ):
                raise UserInputError(
                    f"{self.name} must be between {self.min_value} and {self.max_value} (got {value})."
                )
            return value
        if self.kind is OptionKind.CHOICE:
            choice = str(raw).strip().lower()
            if choice not in self.choices:
                raise UserInputError(f"{self.name} must be one of {', '.join(self.choices)} (got {raw!r}).")
            return choice
        if self.kind is OptionKind.TEXT:
            text = " ".join(storable(str(raw)).split())
            if self.max_length is not None and len(text) > self.max_length:
                raise UserInputError(f"{self.name} is {len(text)} characters; the limit is {self.max_length}.")
            return text
        return raw


@dataclass(frozen=True)
class ImageForm:
    """How a user gives an image on a platform where "attach an image" says too little."""

    usage: str
    how: str


#: Per platform; a platform not listed attaches images the way its app does (photo, attachment).
IMAGE_FORMS: dict[str, ImageForm] = {
    "console": ImageForm(
        usage="image=<path>",
        how="on the console, name the file: image=<path>, or its path as the first word, quoted if it has spaces",
    ),
}


Handler = Callable[["CommandContext"], Awaitable["Reply"]]
CostEstimate = Callable[[Mapping[str, Any], ServiceConfig], Sequence[tuple[str, Usage]]]
"""What a command will use at most, per model, from its validated arguments: priced by the guards,
reserved against the budgets before the paid call. Deliberately generous."""


@dataclass(frozen=True)
class Command:
    """A chat command, the same on every platform.

    ``upstream`` names the paid API the handler calls ("text" or "media"; None for free commands),
    and such a command must declare its ``estimate``: the catalogue refuses one without.
    """

    name: str
    summary: str
    description: str
    options: tuple[Option, ...]
    handler: Handler
    example: str = ""
    admin_only: bool = False
    upload_action: str = "typing"
    upstream: str | None = "text"
    confirms_late: bool = False  # the handler calls ctx.before_paid_call() once its input is valid
    estimate: CostEstimate | None = None

    @property
    def rest_option(self) -> Option | None:
        return next((opt for opt in self.options if opt.rest), None)

    @property
    def image_option(self) -> Option | None:
        return next((opt for opt in self.options if opt.kind is OptionKind.IMAGE), None)

    def option(self, name: str) -> Option | None:
        return next((opt for opt in self.options if opt.name == name), None)

    def usage(self, platform: str | None = None) -> str:
        """One line of usage, e.g. ``/story <idea> [segments=1-12] [style=...]``, with an image
        given the way ``platform`` takes one."""
        parts = [f"/{self.name}"]
        image_form = IMAGE_FORMS[platform].usage if platform in IMAGE_FORMS else "attach an image"
        for opt in self.options:
            if opt.rest:
                parts.append(f"<{opt.name}>" if opt.required else f"[{opt.name}]")
            elif opt.kind is OptionKind.IMAGE:
                parts.append(f"({image_form})" if opt.required else f"[{image_form}]")
            else:
                if opt.kind is OptionKind.INTEGER:
                    shape = f"{opt.min_value}-{opt.max_value}"
                elif opt.kind is OptionKind.CHOICE:
                    shape = "|".join(opt.choices)
                else:
                    shape = "..."
                parts.append(f"{opt.name}={shape}" if opt.required else f"[{opt.name}={shape}]")
        return " ".join(parts)

    def help_text(self, platform: str | None = None) -> str:
        """The command explained for ``platform``: usage, each option, and how to give an image there."""
        lines = [f"/{self.name}: {self.description}", f"Usage: {self.usage(platform)}"]
        for opt in self.options:
            how = IMAGE_FORMS[platform].how if opt.kind is OptionKind.IMAGE and platform in IMAGE_FORMS else ""
            lines.append(f"  {opt.name}: {opt.help}" + (f"; {how}" if how else ""))
        if self.example:
            lines.append(f"Example: {self.example}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Declaration:
    """Everything about a command but its handler, written right above the handler with ``declare``."""

    name: str
    summary: str
    description: str
    options: tuple[Option, ...] = ()
    example: str = ""
    admin_only: bool = False
    upload_action: str = "typing"
    upstream: str | None = "text"
    confirms_late: bool = False
    estimate: CostEstimate | None = None

    def bind(self, handler: Handler) -> Command:
        return Command(
            self.name,
            self.summary,
            self.description,
            self.options,
            handler,
            example=self.example,
            admin_only=self.admin_only,
            upload_action=self.upload_action,
            upstream=self.upstream,
            confirms_late=self.confirms_late,
            estimate=self.estimate,
        )


HandlerMethod = TypeVar("HandlerMethod", bound=Callable[..., Awaitable[Any]])
_DECLARATIONS: dict[Callable[..., Awaitable[Any]], Declaration] = {}


def declare(
    name: str, summary: str, description: str, options: Sequence[Option] = (), **details: Any
) -> Callable[[HandlerMethod], HandlerMethod]:
    """Declare a command on its handler method: the name, help, options, estimate and handler of
    a command stay together, as a discord.py app command carries its parameters."""
    declaration = Declaration(name, summary, description, tuple(options), **details)

    def mark(method: HandlerMethod) -> HandlerMethod:
        _DECLARATIONS[method] = declaration
        return method

    return mark


def declared_commands(handlers: object) -> list[Command]:
    """The commands declared on ``handlers``' methods, bound to it, in the order its class defines them."""
    commands = []
    for attribute, function in vars(type(handlers)).items():
        declaration = _DECLARATIONS.get(function)
        if declaration is not None:
            commands.append(declaration.bind(getattr(handlers, attribute)))
    return commands


@dataclass
class CommandSet:
    """The ordered catalogue adapters register from.

    Iterating gives the commands this bot offers (platform command lists, /help); a command whose
    upstream is withheld is still found by ``get``, so the core can say why it cannot run.
    """

    commands: dict[str, Command] = field(default_factory=dict)
    withheld: dict[str, str] = field(default_factory=dict)  # upstream -> what the operator must do

    def add(self, command: Command) -> None:
        if command.name in self.commands:
            raise ValueError(f"command /{command.name} declared twice")
        if command.upstream is not None and command.estimate is None:
            raise ValueError(f"command /{command.name} calls the {command.upstream} API but declares no estimate")
        self.commands[command.name] = command

    def get(self, name: str) -> Command | None:
        return self.commands.get(name.lower())

    def withhold(self, upstream: str, remedy: str) -> None:
        """Stop offering the commands that call ``upstream``; they answer that ``remedy`` is needed."""
        self.withheld[upstream] = remedy

    def not_set_up(self, command: Command) -> str | None:
        """Why ``command`` cannot run on this bot, or None when it can."""
        remedy = self.withheld.get(command.upstream) if command.upstream is not None else None
        return None if remedy is None else f"/{command.name} is not set up on this bot: {remedy}"

    def __iter__(self) -> Any:
        return iter(c for c in self.commands.values() if c.upstream is None or c.upstream not in self.withheld)


#: How alike (difflib's ratio) a ``word=`` must be to an option's name to be taken for a typo of it.
MISSPELLING_CUTOFF = 0.75

_KEY_VALUE = re.compile(r"(?<!\S)([A-Za-z_]+)=(\"[^\"]*\"|'[^']*'|\S+)")


def parse_text_arguments(command: Command, text: str) -> dict[str, Any]:
    """Parse ``a dragon learns to fly segments=8 style="dark fantasy"`` for ``command``.

    ``name=value`` pairs whose name is one of the command's options become options (the free-text
    option too: ``/character name=Captain``); a name close to one (``segment=6`` for ``segments``)
    is refused as a likely typo, since in the prompt it would silently cost a paid call that ignores
    it; any other ``x=y`` (``e=mc2``) stays in the free text.
    """
    raw: dict[str, Any] = {}
    text_options = [opt.name for opt in command.options if opt.kind is not OptionKind.IMAGE]

    def take(match: re.Match[str]) -> str:
        key = match.group(1).lower()
        option = command.option(key)
        if option is None or option.kind is OptionKind.IMAGE:
            close = difflib.get_close_matches(key, text_options, n=1, cutoff=MISSPELLING_CUTOFF)
            if option is None and close:
                raise UserInputError(f"Unknown option {key}=, did you mean {close[0]}=?")
            return match.group(0)
        if key in raw:
            raise UserInputError(f"{key} is given twice.")
        raw[key] = match.group(2).strip("\"'")
        return " "

    rest = " ".join(_KEY_VALUE.sub(take, text or "").split())
    rest_option = command.rest_option
    if rest_option is not None and rest:
        named = raw.get(rest_option.name)
        raw[rest_option.name] = f"{named} {rest}" if named else rest
    elif rest:
        raise UserInputError(f"/{command.name} takes no free text (got {rest[:40]!r}).")
    return raw


def validate_arguments(command: Command, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Convert and check every option; fill defaults; name the first problem found."""
    values: dict[str, Any] = {}
    for opt in command.options:
        if opt.kind is OptionKind.IMAGE:
            continue
        given = raw.get(opt.name)
        if isinstance(given, str):
            given = storable(given)
        if given is None or (isinstance(given, str) and not given.strip()):
            if opt.required:
                raise UserInputError(f"Missing {opt.name}: {opt.help}")
            values[opt.name] = opt.default
            continue
        values[opt.name] = opt.convert(given)
    unknown = set(raw) - {opt.name for opt in command.options}
    if unknown:
        raise UserInputError(f"/{command.name} has no option {', '.join(sorted(unknown))}.")
    return values
