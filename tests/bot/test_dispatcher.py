"""The chat core with the real catalogue, against the loopback fakes: one reply per command, always."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.core.commands import Command, CommandSet, Option, OptionKind
from bot.core.context import CommandContext, Invocation, UserRef
from bot.core.dispatcher import SANDBOX_FOOTER, ChatCore, Next
from bot.core.jobs import JobCommands
from bot.core.rendering import plural, story_sets_blocks
from bot.core.replies import Reply
from bot.logging_setup import CorrelationFilter
from services.characters import CharacterAnalysis
from services.memory import UserMemory
from services.story import Story, StorySegment, StorySets
from services.usage import Usage
from tests.bot.helpers import (
    CHAT,
    PNG_SIGNATURE,
    USER,
    RecordingResponder,
    bomb_png,
    catalogue,
    invocation,
    png_bytes,
    uploaded,
)
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

Upstreams = tuple[FakeOpenRouter, FakeGenAI]


def make_core(jobs: JobCommands | None = None, **kwargs: Any) -> ChatCore:
    """The catalogue's commands; ``jobs`` (the ``local_jobs`` fixture) for tests that run /video or /thumbnail."""
    return ChatCore(catalogue(UserMemory(), jobs), **kwargs)


async def run(core: ChatCore, command: str, text: str | None = "", **kwargs: Any) -> tuple[Reply, RecordingResponder]:
    """Handle one command; assert the one-reply contract and return the reply and the responder."""
    responder = RecordingResponder()
    returned = await core.handle(invocation(command, text, **kwargs), responder)
    assert responder.deliver_calls == 1
    assert responder.delivered == [returned]
    return returned, responder


def paid_requests(fakes: Upstreams) -> int:
    text, media = fakes
    return len(text.chat_requests) + len(media.requests)


def last_user_prompt(fake: FakeOpenRouter) -> str:
    content = fake.chat_requests[-1].json["messages"][-1]["content"]
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def assert_numbered(blocks: list[str], count: int) -> None:
    numbers = [int(m.group(1)) for block in blocks if (m := re.match(r"(\d+)\. ", block))]
    assert numbers == list(range(1, count + 1)), blocks


# -- every command, once ---------------------------------------------------------------------------


async def test_story(upstreams: Upstreams) -> None:
    text, _ = upstreams
    reply, responder = await run(make_core(), "story", "a dragon learns to fly segments=3")
    assert not reply.is_error
    assert isinstance(reply.result, Story)
    assert reply.blocks[0].startswith("🎬 ") and "3 segments" in reply.blocks[0]
    assert_numbered(reply.blocks[1:], 3)
    assert all("🎥" in block for block in reply.blocks[1:])
    assert responder.progress
    assert len(text.chat_requests) == 1
    assert "a dragon learns to fly" in last_user_prompt(text)
    assert reply.footer == ""


async def test_longstory_plans_then_writes(upstreams: Upstreams) -> None:
    text, _ = upstreams
    reply, responder = await run(make_core(), "longstory", "a heist on the moon segments=10")
    assert not reply.is_error
    assert "10 segments" in reply.blocks[0]
    assert_numbered(reply.blocks[1:], 10)
    assert reply.media == []  # a story this short still fits in messages
    assert responder.progress and "10-segment" in responder.progress[0]
    assert len(text.chat_requests) >= 2  # the outline, then the parts


async def test_longstory_beyond_twelve_segments_also_sends_a_document(upstreams: Upstreams) -> None:
    reply, _ = await run(make_core(), "longstory", "a heist on the moon segments=13")
    assert not reply.is_error
    assert_numbered(reply.blocks[1:], 13)
    [document] = reply.media
    assert document.kind == "document" and document.mime_type == "application/json"
    assert document.data.lstrip().startswith(b"{")


async def test_storysets(upstreams: Upstreams) -> None:
    reply, responder = await run(make_core(), "storysets", "a cat opens a bakery sets=2 segments=2")
    assert not reply.is_error
    assert reply.blocks[0].startswith("🎬 2 takes on: a cat opens a bakery")
    assert sum(block.startswith("Take ") for block in reply.blocks) == 2
    assert responder.progress


async def test_meme(upstreams: Upstreams) -> None:
    reply, responder = await run(make_core(), "meme", "mondays at a startup count=2")
    assert not reply.is_error
    assert reply.blocks[0].startswith("😂 ")
    assert_numbered(reply.blocks[1:], 2)
    assert all("→" in block for block in reply.blocks[1:])
    assert responder.progress


async def test_write_hashtags(upstreams: Upstreams) -> None:
    text, _ = upstreams
    reply, _ = await run(make_core(), "write", "kind=hashtags a vegan ramen recipe")
    assert not reply.is_error
    assert reply.blocks[0] == "✍️ Hashtags"
    assert len(reply.blocks) == 2 and reply.blocks[1].strip()
    assert "hashtags" in last_user_prompt(text)


async def test_trends(upstreams: Upstreams) -> None:
    reply, _ = await run(make_core(), "trends", "indie game dev count=4")
    assert not reply.is_error
    assert reply.blocks[0] == "📈 Trending ideas: indie game dev"
    assert_numbered(reply.blocks[1:], 4)
    assert all("Hook:" in block and "Why now:" in block for block in reply.blocks[1:])


async def test_character_with_a_real_png(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    text, _ = upstreams
    reply, responder = await run(make_core(local_jobs), "character", "Captain", image=uploaded(png_bytes(40, 30)))
    assert not reply.is_error
    assert isinstance(reply.result, CharacterAnalysis)
    assert reply.result.profile.name == "Captain"
    assert (reply.result.width, reply.result.height) == (40, 30)
    assert reply.blocks[0].startswith("🧑‍🎨 Captain: ")
    assert "character=Captain" in reply.blocks[-1]
    assert responder.progress
    [request] = text.chat_requests
    parts = request.json["messages"][-1]["content"]
    assert any(p.get("type") == "image_url" and "data:image/png;base64," in p["image_url"]["url"] for p in parts)


async def test_video(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media.polls_until_done = 3
    reply, responder = await run(make_core(local_jobs), "video", "a cat surfing at sunset duration=6 aspect=16:9")
    assert not reply.is_error
    [video] = reply.media
    assert video.kind == "video"
    assert video.data[4:8] == b"ftyp"
    assert video.mime_type == "video/mp4"
    assert reply.blocks == ["🎬 6 s · 16:9 · a cat surfing at sunset"]
    assert len(responder.progress) >= 2
    [request] = media.video_generation_requests
    assert request.json["instances"][0]["prompt"] == "a cat surfing at sunset"
    assert request.json["parameters"]["durationSeconds"] == 6
    assert request.json["parameters"]["aspectRatio"] == "16:9"
    assert len(media.poll_requests) >= 3


async def test_thumbnail(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    reply, responder = await run(make_core(local_jobs), "thumbnail", "I survived 24 hours in a library aspect=1:1")
    assert not reply.is_error
    [image] = reply.media
    assert image.kind == "image"
    assert image.data.startswith(PNG_SIGNATURE)
    assert image.filename.endswith(".png")
    assert reply.blocks == ["🖼️ I survived 24 hours in a library"]
    assert responder.progress
    assert len(media.requests) == 1


async def test_thumbnail_without_title_uses_the_last_story(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs)
    story, _ = await run(core, "story", "a dragon learns to fly segments=2")
    assert isinstance(story.result, Story)
    reply, _ = await run(core, "thumbnail")
    assert not reply.is_error
    assert reply.blocks == [f"🖼️ {story.result.title}"]


async def test_help_lists_every_command(upstreams: Upstreams) -> None:
    core = make_core()
    reply, _ = await run(core, "help")
    assert not reply.is_error
    for cmd in core.commands:
        assert f"/{cmd.name}: {cmd.summary}" in reply.text
    assert paid_requests(upstreams) == 0


async def test_help_for_one_command(upstreams: Upstreams) -> None:
    core = make_core()
    for text in ("story", "/story", "STORY"):
        reply, _ = await run(core, "help", text)
        assert not reply.is_error
        assert reply.blocks == [core.commands.commands["story"].help_text()]


async def test_help_for_an_unknown_command(upstreams: Upstreams) -> None:
    reply, _ = await run(make_core(), "help", "nope")
    assert reply.is_error
    assert "/nope" in reply.text


async def test_unknown_command(upstreams: Upstreams) -> None:
    reply, responder = await run(make_core(), "dance", "like nobody is watching")
    assert reply.is_error
    assert "Unknown command /dance" in reply.text and "/help" in reply.text
    assert responder.progress == []
    assert paid_requests(upstreams) == 0


async def test_typed_options_like_discord_sends_them(upstreams: Upstreams) -> None:
    text, _ = upstreams
    reply, _ = await run(make_core(), "story", None, idea="a dragon learns to fly", segments=2)
    assert not reply.is_error
    assert_numbered(reply.blocks[1:], 2)
    assert len(text.chat_requests) == 1


# -- bad input: one clear error, no paid call ------------------------------------------------------


BAD_INPUT: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("story", "", {}, ("Missing idea", "Usage: /story")),
    ("story", "   ", {}, ("Missing idea",)),
    ("story", "a dragon segments=99", {}, ("segments must be between 1 and 12", "Usage: /story")),
    ("story", "a dragon segments=many", {}, ("segments must be a whole number",)),
    ("story", "a dragon segments=2 segments=3", {}, ("segments is given twice",)),
    ("video", "a cat aspect=4:3", {}, ("aspect must be one of 9:16, 16:9",)),
    ("video", "a cat duration=5", {}, ("duration must be one of 4, 6, 8",)),
    ("video", "", {}, ("Describe the video",)),
    ("video", "segment=2", {}, ("no", "/story")),
    ("thumbnail", "", {}, ("Give the video's title",)),
    ("character", "Captain", {}, ("/character needs an image",)),
    ("character", "", {"image": uploaded(b"just some notes, not a picture\n", "notes.txt")}, ("not an image",)),
    ("character", "", {"image": uploaded(b"", "empty.png")}, ("empty", "0 bytes")),
    ("character", "", {"image": uploaded(bomb_png(30_000, 30_000), "bomb.png")}, ("pixels",)),
    ("character", "", {"image": uploaded(bomb_png(8_000, 8_000), "big.png")}, ("8000×8000", "megapixels")),
    ("story", "x" * 5000, {}, ("5000 characters", "2000")),
    ("video", "y " * 2600, {}, ("5199 characters", "2000")),
    ("trends", "z" * 5000, {}, ("niche is 5000 characters", "200")),
    ("story", "a dragon character=ghost", {}, ("'ghost'", "/character first")),
    ("video", "a cat character=ghost", {}, ("'ghost'", "/character first")),
    ("thumbnail", "a title character=ghost", {}, ("'ghost'",)),
]


@pytest.mark.parametrize(
    ("command", "text", "extra", "expected"),
    BAD_INPUT,
    ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(BAD_INPUT)],
)
@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_bad_input_is_refused_before_any_paid_call(
    upstreams: Upstreams, command: str, text: str, extra: dict[str, Any], expected: tuple[str, ...]
) -> None:
    reply, _ = await run(make_core(), command, text, **extra)
    assert reply.is_error
    assert reply.text.startswith("⚠️ ")
    for fragment in expected:
        assert fragment in reply.text
    assert "Traceback" not in reply.text and "ref " not in reply.text
    assert paid_requests(upstreams) == 0, "a paid request was made for bad input"


async def test_segment_beyond_the_last_story(upstreams: Upstreams) -> None:
    _, media = upstreams
    core = make_core()
    await run(core, "story", "a dragon learns to fly segments=2")
    reply, _ = await run(core, "video", "segment=5")
    assert reply.is_error
    assert "2 segments" in reply.text and "no 5" in reply.text
    assert media.requests == []


# -- upstream faults, rendered ---------------------------------------------------------------------


async def test_out_of_credits(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.status(402, "Insufficient credits"))
    reply, _ = await run(make_core(), "story", "a dragon learns to fly")
    assert reply.is_error
    assert "credits" in reply.text
    assert "Insufficient credits" not in reply.text
    assert len(text.chat_requests) == 1  # 402 is never retried


async def test_rate_limited_with_retry_after(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.status(429, "Rate limit exceeded", retry_after=30))
    reply, _ = await run(make_core(), "meme", "mondays")
    assert reply.is_error
    assert "busy" in reply.text
    assert "30 s" in reply.text
    assert len(text.chat_requests) == 1  # max_retries=0 in the test configuration


async def test_connection_reset(upstreams: Upstreams) -> None:
    text, _ = upstreams
    text.inject(Fault.reset())
    reply, _ = await run(make_core(), "trends", "cooking")
    assert reply.is_error
    assert "not reachable" in reply.text


async def test_upstream_server_error_on_video_submit(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media.inject(Fault.status(500, "backend exploded"), route="predictLongRunning")
    reply, _ = await run(make_core(local_jobs), "video", "a cat surfing")
    assert reply.is_error
    assert "backend exploded" not in reply.text
    assert reply.media == []


async def test_video_blocked_by_the_safety_filter(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media.video_outcome = "filtered"
    reply, _ = await run(make_core(local_jobs), "video", "a cat surfing")
    assert reply.is_error
    assert "safety filter" in reply.text
    assert reply.media == []
    assert len(media.video_generation_requests) == 1


async def test_video_that_is_not_an_mp4_is_not_delivered(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media.video_outcome = "not_mp4"
    reply, _ = await run(make_core(local_jobs), "video", "a cat surfing")
    assert reply.is_error
    assert reply.media == []


async def test_thumbnail_blocked(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media.inject(Fault.refusal("no"), route="generateContent")
    reply, _ = await run(make_core(local_jobs), "thumbnail", "a title")
    assert reply.is_error
    assert reply.media == []


# -- crashes and delivery failures -------------------------------------------------------------------


def crashing_commands() -> CommandSet:
    async def explode(ctx: CommandContext) -> Reply:
        raise RuntimeError("database password is hunter2")

    commands = CommandSet()
    commands.add(
        Command(
            "explode",
            "Always crashes",
            "A handler with a bug.",
            (Option("what", OptionKind.TEXT, "anything", rest=True),),
            explode,
            example="/explode now",
            upstream=None,
        )
    )
    return commands


async def test_unexpected_exception_becomes_one_error_with_a_reference(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(CorrelationFilter())  # as configure_logging does for every handler
    core = ChatCore(crashing_commands(), sandbox_upstreams=frozenset({"text"}))
    responder = RecordingResponder()
    reply = await core.handle(invocation("explode", "now"), responder)
    assert responder.delivered == [reply]
    assert reply.is_error
    match = re.search(r"\(ref ([0-9a-f]{8})\)", reply.text)
    assert match
    assert "hunter2" not in reply.text and "RuntimeError" not in reply.text
    assert reply.footer == ""  # errors are never labelled as sandbox output
    # The operator can find the crash by the reference: the log line carries it as its correlation id.
    assert any(
        getattr(record, "correlation_id", None) == match.group(1) and record.exc_info for record in caplog.records
    )


async def test_a_failed_delivery_is_followed_by_one_fallback(upstreams: Upstreams) -> None:
    responder = RecordingResponder(fail_deliveries=1)
    reply = await make_core().handle(invocation("story", "a dragon learns to fly segments=2"), responder)
    assert responder.deliver_calls == 2
    [fallback] = responder.delivered
    assert fallback is reply
    assert fallback.is_error and "could not be delivered" in fallback.text and "ref " in fallback.text


async def test_handle_never_raises_even_when_every_delivery_fails(upstreams: Upstreams) -> None:
    responder = RecordingResponder(fail_deliveries=5)
    reply = await make_core().handle(invocation("help"), responder)
    assert responder.deliver_calls == 2
    assert responder.delivered == []
    assert reply.is_error


async def test_a_failed_error_delivery_is_not_retried(upstreams: Upstreams) -> None:
    responder = RecordingResponder(fail_deliveries=5)
    reply = await make_core().handle(invocation("dance"), responder)
    assert responder.deliver_calls == 1
    assert reply.is_error


# -- the sandbox label -------------------------------------------------------------------------------


async def test_sandbox_label_on_text_replies_only(upstreams: Upstreams) -> None:
    core = make_core(sandbox_upstreams=frozenset({"text"}))
    story, _ = await run(core, "story", "a dragon learns to fly segments=2")
    assert story.footer == SANDBOX_FOOTER
    assert story.text.endswith(SANDBOX_FOOTER)
    error, _ = await run(core, "story", "")
    assert error.is_error and error.footer == "" and SANDBOX_FOOTER not in error.text
    unknown, _ = await run(core, "dance")
    assert SANDBOX_FOOTER not in unknown.text


async def test_no_label_without_sandbox(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs)
    for command, text in (("story", "a dragon"), ("video", "a cat"), ("thumbnail", "a title")):
        reply, _ = await run(core, command, text)
        assert not reply.is_error and reply.footer == ""


async def test_media_sandbox_labels_video_and_thumbnail(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs, sandbox_upstreams=frozenset({"text", "media"}))
    for command, text in (("video", "a cat"), ("thumbnail", "a title")):
        reply, _ = await run(core, command, text)
        assert not reply.is_error
        assert reply.footer == SANDBOX_FOOTER


async def test_text_sandbox_does_not_label_media_replies(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs, sandbox_upstreams=frozenset({"text"}))
    video, _ = await run(core, "video", "a cat surfing")
    assert not video.is_error
    assert video.footer == ""
    thumbnail, _ = await run(core, "thumbnail", "a title")
    assert thumbnail.footer == ""


async def test_media_sandbox_alone_labels_video(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs, sandbox_upstreams=frozenset({"media"}))
    video, _ = await run(core, "video", "a cat surfing")
    assert video.footer == SANDBOX_FOOTER
    story, _ = await run(core, "story", "a dragon")
    assert story.footer == ""


async def test_help_is_not_labelled_as_sandbox_output(upstreams: Upstreams) -> None:
    reply, _ = await run(make_core(sandbox_upstreams=frozenset({"text", "media"})), "help")
    assert reply.footer == ""


# -- what the bot remembers ------------------------------------------------------------------------


async def test_story_with_a_remembered_character(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    text, media = upstreams
    core = make_core(local_jobs)
    analysed, _ = await run(core, "character", "Captain", image=uploaded(png_bytes()))
    assert isinstance(analysed.result, CharacterAnalysis)
    description = analysed.result.profile.visual_description
    assert description

    story, _ = await run(core, "story", "a pirate finds a map segments=2 character=captain")
    assert not story.is_error
    assert description in last_user_prompt(text)
    assert "Captain" in last_user_prompt(text)

    video, _ = await run(core, "video", "sailing at dawn character=Captain")
    assert not video.is_error
    assert description in media.video_generation_requests[-1].json["instances"][0]["prompt"]


async def test_characters_are_per_user(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs)
    await run(core, "character", "Captain", image=uploaded(png_bytes()))
    someone_else = Invocation(
        command="story", user=UserRef("test", "someone-else"), chat=CHAT, text="a dragon character=Captain"
    )
    responder = RecordingResponder()
    reply = await core.handle(someone_else, responder)
    assert responder.delivered == [reply]
    assert reply.is_error and "none yet" in reply.text


async def test_character_named_with_name_option(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    core = make_core(local_jobs)
    analysed, _ = await run(core, "character", "name=Captain", image=uploaded(png_bytes()))
    assert isinstance(analysed.result, CharacterAnalysis)
    assert analysed.result.profile.name == "Captain"
    story, _ = await run(core, "story", "a pirate finds a map character=Captain")
    assert not story.is_error


async def test_video_of_a_story_segment_uses_its_visual_prompt(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    core = make_core(local_jobs)
    story_reply, _ = await run(core, "story", "a dragon learns to fly segments=3")
    story = story_reply.result
    assert isinstance(story, Story)
    segment = story.segments[1]

    reply, _ = await run(core, "video", "segment=2")
    assert not reply.is_error
    [request] = media.video_generation_requests
    assert request.json["instances"][0]["prompt"] == segment.visual_prompt
    assert request.json["parameters"]["durationSeconds"] == segment.duration_seconds

    await run(core, "video", "slow motion segment=2 duration=4")
    prompt = media.video_generation_requests[-1].json["instances"][0]["prompt"]
    assert prompt == f"{segment.visual_prompt} slow motion"
    assert media.video_generation_requests[-1].json["parameters"]["durationSeconds"] == 4


async def test_a_one_segment_story_says_segment_not_segments(upstreams: Upstreams) -> None:
    _, media = upstreams
    core = make_core()
    story_reply, _ = await run(core, "story", "a dragon learns to fly segments=1")
    assert not story_reply.is_error
    assert "\n1 segment · " in story_reply.text and "1 segments" not in story_reply.text

    reply, _ = await run(core, "video", "segment=2")
    assert reply.is_error
    assert "Your last story has 1 segment; there is no 2." in reply.text
    assert media.video_generation_requests == []


def test_counts_read_in_the_right_number() -> None:
    one = Story(
        title="t", idea="i", segments=[StorySegment(number=1, narration="n", visual_prompt="v", duration_seconds=4)]
    )
    sets = StorySets(idea="dragons", sets=[one], usage=Usage())
    assert story_sets_blocks(sets)[0] == "🎬 1 take on: dragons"
    assert [plural(n, "segment") for n in (0, 1, 2)] == ["0 segments", "1 segment", "2 segments"]


# -- middlewares -----------------------------------------------------------------------------------


async def test_middlewares_wrap_every_handler_in_order(upstreams: Upstreams) -> None:
    seen: list[str] = []

    def recorder(label: str) -> Any:
        async def middleware(ctx: CommandContext, following: Next) -> Reply:
            seen.append(f"{label}>{ctx.command.name}")
            reply = await following(ctx)
            seen.append(f"{label}<{ctx.command.name}")
            return reply

        return middleware

    core = make_core(middlewares=[recorder("outer"), recorder("inner")])
    await run(core, "help")
    await run(core, "story", "a dragon")
    assert seen == [
        "outer>help",
        "inner>help",
        "inner<help",
        "outer<help",
        "outer>story",
        "inner>story",
        "inner<story",
        "outer<story",
    ]


async def test_middleware_can_short_circuit(upstreams: Upstreams) -> None:
    async def quota(ctx: CommandContext, following: Next) -> Reply:
        if ctx.command.name == "story":
            return Reply.error("You have used all your stories for today.")
        return await following(ctx)

    core = make_core(middlewares=[quota])
    reply, _ = await run(core, "story", "a dragon learns to fly")
    assert reply.is_error and "all your stories" in reply.text
    assert paid_requests(upstreams) == 0
    allowed, _ = await run(core, "meme", "mondays")
    assert not allowed.is_error


async def test_middleware_sees_validated_arguments(upstreams: Upstreams) -> None:
    captured: list[dict[str, Any]] = []

    async def spy(ctx: CommandContext, following: Next) -> Reply:
        captured.append(dict(ctx.args))
        return Reply(blocks=["intercepted"])

    reply, _ = await run(make_core(middlewares=[spy]), "story", "a dragon segments=4")
    assert reply.blocks == ["intercepted"]
    assert captured == [{"idea": "a dragon", "segments": 4, "style": None, "character": None}]
    # Invalid input never reaches a middleware.
    await run(make_core(middlewares=[spy]), "story", "a dragon segments=40")
    assert len(captured) == 1


async def test_middleware_errors_are_rendered_like_handler_errors(upstreams: Upstreams) -> None:
    async def broken(ctx: CommandContext, following: Next) -> Reply:
        raise KeyError("internal-detail")

    reply, _ = await run(make_core(middlewares=[broken]), "help")
    assert reply.is_error and "ref " in reply.text and "internal-detail" not in reply.text


# -- progress --------------------------------------------------------------------------------------


async def test_progress_is_throttled_but_forced_lines_always_show(
    upstreams: Upstreams, local_jobs: JobCommands
) -> None:
    _, media = upstreams
    media.polls_until_done = 4
    core = make_core(local_jobs, progress_interval=3600.0)
    _, responder = await run(core, "video", "a cat surfing")
    [job] = await local_jobs.jobs.list_jobs(USER.key)
    job_id = job.id[:8]
    # "rendering" lines are throttled away; the stage changes are forced through.
    assert responder.progress == [
        f"🎬 Video job {job_id} created; sending it to the studio…",
        "🎬 The video is queued at the studio…",
        "📥 Fetching the finished video…",
        "✅ Video ready",
    ]


async def test_rendering_progress_shows_when_not_throttled(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media.polls_until_done = 3
    _, responder = await run(make_core(local_jobs, progress_interval=0.0), "video", "a cat surfing")
    assert any(line.startswith("🎞️ Rendering") for line in responder.progress)


class BrokenProgress(RecordingResponder):
    """A platform that refuses to edit the status message once (Telegram: "message is not modified")."""

    async def show_progress(self, text: str) -> None:
        if text.startswith("✅"):
            raise ConnectionError("message is not modified")
        await super().show_progress(text)


async def test_a_failing_progress_line_does_not_lose_the_result(upstreams: Upstreams, local_jobs: JobCommands) -> None:
    _, media = upstreams
    responder = BrokenProgress()
    reply = await make_core(local_jobs).handle(invocation("video", "a cat surfing"), responder)
    assert responder.delivered == [reply]
    assert len(media.video_generation_requests) == 1  # the video was paid for and downloaded
    assert not reply.is_error
    assert reply.media and reply.media[0].kind == "video"
