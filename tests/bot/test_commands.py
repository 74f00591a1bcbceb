"""Command declarations, text-argument parsing and validation, and splitting replies into messages."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.core.commands import Command, CommandSet, Option, OptionKind, parse_text_arguments, validate_arguments
from bot.core.replies import split_blocks
from connectors.errors import UserInputError
from tests.bot.helpers import catalogue

COMMANDS = catalogue()


def command(name: str) -> Command:
    found = COMMANDS.get(name)
    assert found is not None, f"/{name} is not in the catalogue"
    return found


def parse(line: str) -> dict[str, object]:
    """Parse and validate a whole chat line such as ``/story a dragon segments=8``."""
    assert line.startswith("/")
    name, _, rest = line[1:].partition(" ")
    cmd = command(name)
    return validate_arguments(cmd, parse_text_arguments(cmd, rest))


def refusal(line: str) -> str:
    with pytest.raises(UserInputError) as caught:
        parse(line)
    return caught.value.user_message


# -- parsing -------------------------------------------------------------------------------------


def test_story_idea_and_segments() -> None:
    args = parse("/story a dragon learns to fly segments=8")
    assert args["idea"] == "a dragon learns to fly"
    assert args["segments"] == 8
    assert args["style"] is None and args["character"] is None


def test_defaults_fill_missing_options() -> None:
    args = parse("/story a dragon learns to fly")
    assert args["segments"] == 5
    assert parse("/video a cat surfing")["aspect"] == "9:16"
    assert parse("/write ramen")["kind"] == "caption"


def test_options_may_come_anywhere_in_the_line() -> None:
    args = parse("/story segments=3 a dragon style=noir learns to fly")
    assert args == {"idea": "a dragon learns to fly", "segments": 3, "style": "noir", "character": None}


@pytest.mark.parametrize("quote", ['"', "'"])
def test_quoted_values_keep_their_spaces(quote: str) -> None:
    args = parse(f"/story a knight style={quote}dark fantasy{quote} segments=2")
    assert args["style"] == "dark fantasy"
    assert args["idea"] == "a knight"
    assert args["segments"] == 2


def test_option_names_are_case_insensitive() -> None:
    assert parse("/story a dragon SEGMENTS=4")["segments"] == 4


def test_key_value_that_is_not_an_option_stays_in_the_free_text() -> None:
    args = parse("/story a story about mood=happy robots segments=2")
    assert args["idea"] == "a story about mood=happy robots"
    assert args["segments"] == 2


def test_free_text_whitespace_is_normalised() -> None:
    assert parse("/story   a   dragon\n\tflies  ")["idea"] == "a dragon flies"


def test_same_option_twice_is_refused() -> None:
    message = refusal("/story a dragon segments=3 segments=4")
    assert "segments" in message and "twice" in message


@pytest.mark.parametrize(
    ("line", "option", "bounds"),
    [
        ("/story a dragon segments=99", "segments", ("1", "12")),
        ("/story a dragon segments=0", "segments", ("1", "12")),
        ("/story a dragon segments=-3", "segments", ("1", "12")),
        ("/longstory a heist segments=5", "segments", ("6", "60")),
        ("/storysets a cat sets=1", "sets", ("2", "5")),
        ("/meme mondays count=100", "count", ("1",)),
        ("/video segment=0", "segment", ("1", "60")),
    ],
)
def test_integer_out_of_range_names_option_and_range(line: str, option: str, bounds: tuple[str, ...]) -> None:
    message = refusal(line)
    assert message.startswith(option)
    assert "between" in message
    for bound in bounds:
        assert re.search(rf"\b{bound}\b", message), message


@pytest.mark.parametrize("value", ["abc", "8.5", "eight", "1e3"])
def test_integer_that_is_not_a_number(value: str) -> None:
    message = refusal(f"/story a dragon segments={value}")
    assert message.startswith("segments")
    assert "whole number" in message
    assert value in message


@pytest.mark.parametrize(
    ("line", "option", "allowed"),
    [
        ("/video a cat aspect=4:3", "aspect", ("9:16", "16:9")),
        ("/video a cat duration=5", "duration", ("4", "6", "8")),
        ("/thumbnail a title aspect=4:3", "aspect", ("16:9", "9:16", "1:1")),
    ],
)
def test_choices_are_enforced(line: str, option: str, allowed: tuple[str, ...]) -> None:
    message = refusal(line)
    assert message.startswith(option)
    for choice in allowed:
        assert choice in message


def test_valid_choices_are_accepted() -> None:
    args = parse("/video a cat duration=6 aspect=16:9")
    assert args["duration"] == "6" and args["aspect"] == "16:9"


@pytest.mark.parametrize(
    ("line", "missing"),
    [
        ("/story", "idea"),
        ("/story segments=3", "idea"),
        ("/longstory   ", "idea"),
        ("/meme count=2", "topic"),
        ("/write kind=hashtags", "brief"),
        ("/trends", "niche"),
    ],
)
def test_missing_required_option(line: str, missing: str) -> None:
    message = refusal(line)
    assert message.startswith(f"Missing {missing}")
    assert command(line[1:].split()[0]).option(missing).help in message  # type: ignore[union-attr]


def test_text_longer_than_its_limit_is_refused() -> None:
    message = refusal("/trends " + "x" * 201)
    assert "niche" in message and "201" in message and "200" in message


def test_unknown_typed_option_is_refused() -> None:
    """Typed options (Discord) are checked against the declaration too."""
    cmd = command("story")
    with pytest.raises(UserInputError, match="no option colour"):
        validate_arguments(cmd, {"idea": "a dragon", "colour": "red"})


def test_typed_options_are_converted_like_text() -> None:
    cmd = command("story")
    assert validate_arguments(cmd, {"idea": "  a   dragon ", "segments": 7})["segments"] == 7
    assert validate_arguments(cmd, {"idea": "a dragon", "segments": "7"})["segments"] == 7


# -- declarations ----------------------------------------------------------------------------------


def test_usage_lines() -> None:
    assert command("story").usage() == "/story <idea> [segments=1-12] [style=...] [character=...]"
    assert command("character").usage() == "/character (attach an image) [name]"
    assert command("video").usage() == (
        "/video [prompt] [duration=4|6|8] [aspect=9:16|16:9] [segment=1-60] [character=...] [attach an image]"
    )
    assert command("help").usage() == "/help [command]"


def test_every_image_command_says_how_to_give_an_image_on_the_console() -> None:
    image_commands = [cmd for cmd in COMMANDS if cmd.image_option is not None]
    assert {cmd.name for cmd in image_commands} >= {"character", "video"}
    for cmd in image_commands:
        console = cmd.help_text("console")
        assert "image=<path>" in cmd.usage("console") and "attach an image" not in console
        assert "its path as the first word" in console
        assert cmd.usage("telegram") == cmd.usage() and "attach an image" in cmd.usage("telegram")
        assert "on the console" not in cmd.help_text("telegram")


def test_help_text_lists_every_option_and_the_example() -> None:
    for cmd in COMMANDS:
        text = cmd.help_text()
        assert text.startswith(f"/{cmd.name}: {cmd.description}")
        assert f"Usage: {cmd.usage()}" in text
        for opt in cmd.options:
            assert f"  {opt.name}: {opt.help}" in text
        assert f"Example: {cmd.example}" in text


def test_the_catalogue_has_the_expected_commands() -> None:
    names = [cmd.name for cmd in COMMANDS]
    assert names == [
        "story",
        "longstory",
        "storysets",
        "meme",
        "write",
        "trends",
        "character",
        "video",
        "short",
        "thumbnail",
        "jobs",
        "schedule",
        "help",
    ]


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=lambda c: c.name)
def test_every_command_is_declared_completely(cmd: Command) -> None:
    # Telegram command names: 1-32 lower-case letters, digits and underscores (Discord's rule is close).
    assert re.fullmatch(r"[a-z0-9_]{1,32}", cmd.name)
    assert COMMANDS.get(cmd.name) is cmd
    assert cmd.summary.strip() and len(cmd.summary) <= 100  # Discord's description limit
    assert cmd.description.strip()
    assert cmd.help_text().strip()
    assert cmd.example.startswith(f"/{cmd.name} ")
    names = [opt.name for opt in cmd.options]
    assert len(names) == len(set(names)), "option names must be unique"
    assert sum(opt.rest for opt in cmd.options) <= 1
    assert sum(opt.kind is OptionKind.IMAGE for opt in cmd.options) <= 1
    for opt in cmd.options:
        assert re.fullmatch(r"[a-z_]{1,32}", opt.name)
        assert opt.help.strip() and len(opt.help) <= 100
        if opt.kind is OptionKind.INTEGER:
            assert opt.min_value is not None and opt.max_value is not None
            assert opt.min_value <= opt.max_value
            if opt.default is not None:
                assert opt.min_value <= opt.default <= opt.max_value
        if opt.kind is OptionKind.CHOICE:
            assert opt.choices
            assert opt.default is None or opt.default in opt.choices
        if opt.required:
            assert opt.default is None


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=lambda c: c.name)
def test_every_example_parses(cmd: Command) -> None:
    rest = cmd.example.removeprefix(f"/{cmd.name}")
    args = validate_arguments(cmd, parse_text_arguments(cmd, rest))
    assert set(args) == {opt.name for opt in cmd.options if opt.kind is not OptionKind.IMAGE}


def test_command_names_are_unique() -> None:
    names = [cmd.name for cmd in COMMANDS]
    assert len(names) == len(set(names))
    commands = CommandSet()
    commands.add(command("story"))
    with pytest.raises(ValueError, match="twice"):
        commands.add(command("story"))


def test_lookup_is_case_insensitive() -> None:
    assert COMMANDS.get("STORY") is command("story")
    assert COMMANDS.get("nope") is None


# -- split_blocks ----------------------------------------------------------------------------------


def _normalised(text: str) -> str:
    return " ".join(text.split())


def test_short_answer_is_one_message() -> None:
    assert split_blocks(["a", "b"], 4096) == ["a\n\nb"]
    assert split_blocks([], 4096) == []


def test_blocks_shorter_than_the_limit_are_never_cut() -> None:
    blocks = [f"{i}. " + ("word " * (i * 7 % 53 + 1)).strip() for i in range(1, 80)]
    limit = 300
    messages = split_blocks(blocks, limit)
    assert all(len(m) <= limit for m in messages)
    pieces = [piece for message in messages for piece in message.split("\n\n")]
    assert pieces == blocks


def test_a_6000_character_answer_fits_telegram_messages_without_losing_text() -> None:
    blocks = [f"{n}. [6 s] " + " ".join(f"narration{n}-{w}" for w in range(12)) + "\n   🎥 shot" for n in range(40)]
    text = "\n\n".join(blocks)
    assert len(text) >= 6000
    messages = split_blocks(blocks, 4096)
    assert 2 <= len(messages) <= 3
    assert all(len(m) <= 4096 for m in messages)
    assert _normalised(" ".join(messages)) == _normalised(text)
    pieces = [piece for message in messages for piece in message.split("\n\n")]
    assert pieces == blocks


def test_an_over_long_block_is_cut_at_a_space() -> None:
    words = [f"w{i:04d}" for i in range(1500)]
    block = " ".join(words)  # 8,999 characters, no line breaks
    messages = split_blocks(["header", block, "footer"], 4096)
    assert all(len(m) <= 4096 for m in messages)
    assert _normalised(" ".join(messages)) == _normalised("header " + block + " footer")
    # No word was cut in two: every message starts and ends on a whole word.
    for message in messages:
        for token in message.split():
            assert token in ("header", "footer") or re.fullmatch(r"w\d{4}", token), token


def test_an_over_long_block_prefers_a_line_break() -> None:
    lines = [f"line{i:03d} " * 9 for i in range(100)]  # ~72 characters a line
    block = "\n".join(line.strip() for line in lines)
    messages = split_blocks([block], 1000)
    assert len(messages) > 1
    assert all(len(m) <= 1000 for m in messages)
    for message in messages:
        # Each message is made of whole lines.
        assert all(re.fullmatch(r"(line\d{3} ){8}line\d{3}", line) for line in message.split("\n")), message
    assert _normalised(" ".join(messages)) == _normalised(block)


def test_a_block_without_any_break_is_cut_hard() -> None:
    block = "x" * 10_000
    messages = split_blocks([block], 4096)
    assert [len(m) for m in messages] == [4096, 4096, 1808]
    assert "".join(messages) == block


@pytest.mark.parametrize(
    ("line", "option", "expected"),
    [("/character name=Captain", "name", "Captain"), ("/help command=story", "command", "story")],
)
def test_rest_option_given_as_name_value(line: str, option: str, expected: str) -> None:
    assert parse(line)[option] == expected


@pytest.mark.parametrize(
    ("name", "rest", "meant"),
    [
        ("story", "a dragon segment=6", "segments"),
        ("story", "a dragon styel=noir", "style"),
        ("video", "a cat durations=8", "duration"),
        ("video", "a cat segments=2", "segment"),
        ("storysets", "dragons set=3", "sets"),
        ("meme", "mondays tones=dry", "tone"),
    ],
)
def test_a_misspelled_option_is_refused_with_the_likely_one(name: str, rest: str, meant: str) -> None:
    typo = rest.rsplit(" ", 1)[1].split("=")[0]
    with pytest.raises(UserInputError, match=rf"^Unknown option {typo}=, did you mean {meant}=\?$"):
        parse_text_arguments(command(name), rest)


@pytest.mark.parametrize(
    ("name", "rest"),
    [("story", "why e=mc2 matters"), ("video", "a sign that says size=XL"), ("write", "a=b for beginners")],
)
def test_other_equals_signs_stay_in_the_prompt(name: str, rest: str) -> None:
    cmd = command(name)
    assert cmd.rest_option is not None
    assert parse_text_arguments(cmd, rest) == {cmd.rest_option.name: rest}


async def test_a_command_is_one_declared_method() -> None:
    """Adding a command: declare it on its handler (options, help, estimate); the catalogue and the
    chat core take it from there."""
    from bot.core.commands import declare, declared_commands
    from bot.core.dispatcher import ChatCore
    from bot.core.replies import Reply
    from tests.bot.helpers import RecordingResponder, invocation

    class Greetings:
        @declare(
            "greet",
            "Say hello",
            "Greets someone by name.",
            (Option("name", OptionKind.TEXT, "who", required=True, rest=True),),
            upstream=None,
        )
        async def greet(self, ctx: Any) -> Reply:
            return Reply(blocks=[f"hello {ctx.args['name']}"])

    commands = CommandSet()
    for declared in declared_commands(Greetings()):
        commands.add(declared)
    assert [c.name for c in commands] == ["greet"] and commands.get("greet") is not None
    reply = await ChatCore(commands).handle(invocation("greet", "Ada"), RecordingResponder())
    assert reply.text == "hello Ada"
