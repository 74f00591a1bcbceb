"""Reelwright's chat commands, each declared once, right above its handler: name, help, typed
options and cost estimate (``declare``). Adapters derive their platform registration from these.

Handlers only call services and turn results into a ``Reply``; parsing, progress, errors, money and
the sandbox label are the chat core's job. Adding a command is one declared method here plus its
service function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bot.core.commands import CommandSet, CostEstimate, Option, OptionKind, declare, declared_commands
from bot.core.context import CommandContext
from bot.core.jobs import JobCommands, address_of
from bot.core.rendering import (
    character_blocks,
    free_content_blocks,
    meme_blocks,
    plural,
    story_blocks,
    story_document,
    story_sets_blocks,
    trend_blocks,
)
from bot.core.replies import Media, Reply
from bot.core.scheduling import schedule_command
from connectors.errors import UserInputError
from services.characters import (
    CharacterBook,
    CharacterImage,
    CharacterProfile,
    DatabaseCharacterBook,
    analyze_character_from_image,
)
from services.config import ServiceConfig, service_config
from services.free_content import KIND_GUIDES, generate_free_content
from services.meme import MAX_MEMES, generate_meme_segments
from services.memory import UserMemory
from services.schedules import ScheduleService
from services.shorts import (
    MAX_SHORT_SEGMENTS,
    MIN_SHORT_SEGMENTS,
    NO_VOICE,
    ShortPayload,
    check_short_request,
    narration_voice,
    short_estimate_usage,
)
from services.story import (
    MAX_LONG_SEGMENTS,
    MAX_SEGMENTS,
    MAX_SETS,
    StoryRequest,
    generate_story_segments,
    generate_story_segments_chunked,
    generate_story_segments_in_sets,
)
from services.thumbnail import (
    MAX_TITLE_CHARS,
    ThumbnailRequest,
    validate_thumbnail_request,
)
from services.trends import MAX_IDEAS, generate_trending_ideas
from services.usage import Usage
from services.video import VideoRequest, validate_video_request

LONG_STORY_DOCUMENT_AFTER = 12
PROMPT_TOKENS_PER_CALL = 600
VISION_IMAGE_TOKENS = 1500
Args = Mapping[str, Any]


def text_estimate(
    model: Callable[[ServiceConfig], str],
    output_tokens: Callable[[Args], int],
    *,
    calls: Callable[[Args], int] = lambda args: 1,
    image_tokens: int = 0,
) -> CostEstimate:
    """A generous text-model estimate: each call's prompt (instructions plus the user's text, a
    token per three characters) and the output the arguments ask for."""

    def estimate(args: Args, config: ServiceConfig) -> Sequence[tuple[str, Usage]]:
        text = " ".join(str(value) for value in args.values() if isinstance(value, str))
        count = calls(args)
        usage = Usage(
            model_calls=count,
            prompt_tokens=(PROMPT_TOKENS_PER_CALL + len(text) // 3) * count + image_tokens,
            completion_tokens=output_tokens(args),
        )
        return [(model(config), usage)]

    return estimate


def video_estimate(args: Args, config: ServiceConfig) -> Sequence[tuple[str, Usage]]:
    """The clip's seconds; without duration= the longest clip a story segment can ask for."""
    return [(config.video_model, Usage(model_calls=1, video_seconds=int(args.get("duration") or 8)))]


def short_estimate(args: Args, config: ServiceConfig) -> Sequence[tuple[str, Usage]]:
    """The whole short at once: story, every clip at 8 s, narration (unless voice=none), thumbnail, copy."""
    voice = str(args.get("voice") or "").strip().lower()
    return short_estimate_usage(int(args.get("segments") or 5), voice != NO_VOICE, config)


def thumbnail_estimate(args: Args, config: ServiceConfig) -> Sequence[tuple[str, Usage]]:
    return [(config.thumbnail_model, Usage(model_calls=1, images=1))]


def _character_option(what: str) -> Option:
    return Option(
        "character", OptionKind.TEXT, f"a character analysed with /character, by name, to keep {what}", max_length=60
    )


STYLE = Option("style", OptionKind.TEXT, 'tone or visual style, e.g. "dark fantasy"', max_length=120)
HERO = _character_option("the hero consistent")
SAME_CHARACTER = _character_option("the character consistent")
IDEA = Option("idea", OptionKind.TEXT, "what the story is about", required=True, rest=True)
SEGMENTS = Option(
    "segments",
    OptionKind.INTEGER,
    f"number of clips (1-{MAX_SEGMENTS})",
    default=5,
    min_value=1,
    max_value=MAX_SEGMENTS,
)
LONG_SEGMENTS = Option(
    "segments",
    OptionKind.INTEGER,
    f"number of clips (6-{MAX_LONG_SEGMENTS})",
    default=24,
    min_value=6,
    max_value=MAX_LONG_SEGMENTS,
)
SETS = Option("sets", OptionKind.INTEGER, f"how many takes (2-{MAX_SETS})", default=3, min_value=2, max_value=MAX_SETS)
SEGMENTS_PER_SET = Option("segments", OptionKind.INTEGER, "clips per take (1-8)", default=4, min_value=1, max_value=8)


class ReelwrightCommands:
    """The commands, each declared on its handler, with what the handlers share: the per-user memory
    (the last story), the character book, durable jobs, schedules, and the catalogue (for /help)."""

    def __init__(
        self,
        catalogue: CommandSet,
        memory: UserMemory,
        jobs: JobCommands,
        characters: CharacterBook,
        schedules: ScheduleService | None,
    ) -> None:
        self.catalogue = catalogue
        self.memory = memory
        self.jobs = jobs
        self.characters = characters
        self.schedules = schedules

    async def character_for(self, ctx: CommandContext) -> CharacterProfile | None:
        name = ctx.args.get("character")
        if not name:
            return None
        profile = await self.characters.find(ctx.user.key, name)
        if profile is None:
            known = ", ".join(await self.characters.names(ctx.user.key)) or "none yet"
            raise UserInputError(f"I don't know a character called {name!r} (yours: {known}). Use /character first.")
        return profile

    async def character_image_for(self, ctx: CommandContext) -> CharacterImage | None:
        """The image of the ``character=`` named in ``ctx``, if it was kept with one."""
        name = ctx.args.get("character")
        return await self.characters.image_of(ctx.user.key, name) if name else None

    async def _story_request(self, ctx: CommandContext) -> StoryRequest:
        return StoryRequest(
            idea=ctx.args["idea"],
            segments=ctx.args["segments"],
            style=ctx.args.get("style"),
            character=await self.character_for(ctx),
        )

    @declare(
        "story",
        "Story as video segments",
        "Write a story split into 4-8 s video clips with narration and shots.",
        (IDEA, SEGMENTS, STYLE, HERO),
        example="/story a dragon learns to fly segments=6",
        estimate=text_estimate(lambda c: c.story_model, lambda a: 120 * a["segments"] + 200),
    )
    async def story(self, ctx: CommandContext) -> Reply:
        request = await self._story_request(ctx)
        await ctx.progress("✍️ Writing your story…", force=True)
        story = await generate_story_segments(request)
        self.memory.remember_story(ctx.user.key, story)
        return Reply(blocks=story_blocks(story), result=story)

    @declare(
        "longstory",
        "Long story, planned then written in parts",
        "Write a long story (up to 60 clips): an outline first, then its parts at once.",
        (IDEA, LONG_SEGMENTS, STYLE, HERO),
        example="/longstory a heist on the moon segments=40",
        estimate=text_estimate(
            lambda c: c.story_model,
            lambda a: 120 * a["segments"] + 800,
            calls=lambda a: 1 + math.ceil(a["segments"] / 8),
        ),
    )
    async def longstory(self, ctx: CommandContext) -> Reply:
        request = await self._story_request(ctx)
        await ctx.progress(
            f"🗺️ Planning a {request.segments}-segment story, then writing its parts at once…", force=True
        )
        story = await generate_story_segments_chunked(request)
        self.memory.remember_story(ctx.user.key, story)
        media = []
        if len(story.segments) > LONG_STORY_DOCUMENT_AFTER:
            media.append(Media("document", story_document(story), "story.json", "The whole story", "application/json"))
        return Reply(blocks=story_blocks(story), media=media, result=story)

    @declare(
        "storysets",
        "Alternative takes on one idea",
        "Write several alternative stories for the same idea.",
        (IDEA, SETS, SEGMENTS_PER_SET, STYLE, HERO),
        example="/storysets a cat opens a bakery sets=3",
        estimate=text_estimate(
            lambda c: c.story_model, lambda a: (120 * a["segments"] + 200) * a["sets"], calls=lambda a: a["sets"]
        ),
    )
    async def storysets(self, ctx: CommandContext) -> Reply:
        request = await self._story_request(ctx)
        await ctx.progress(f"✍️ Writing {ctx.args['sets']} alternative takes at once…", force=True)
        sets = await generate_story_segments_in_sets(request, sets=ctx.args["sets"])
        if sets.sets:
            self.memory.remember_story(ctx.user.key, sets.sets[0])
        return Reply(blocks=story_sets_blocks(sets), result=sets)

    @declare(
        "meme",
        "Meme script",
        "Write a meme script: setup, punchline, caption and visual per beat.",
        (
            Option("topic", OptionKind.TEXT, "what the meme is about", required=True, rest=True),
            Option(
                "count",
                OptionKind.INTEGER,
                f"number of beats (1-{MAX_MEMES})",
                default=3,
                min_value=1,
                max_value=MAX_MEMES,
            ),
            Option("tone", OptionKind.TEXT, "e.g. wholesome, absurd, dry", max_length=60),
        ),
        example="/meme mondays at a startup count=3",
        estimate=text_estimate(lambda c: c.meme_model, lambda a: 150 * a["count"] + 100),
    )
    async def meme(self, ctx: CommandContext) -> Reply:
        await ctx.progress("😂 Cooking up a meme…", force=True)
        meme = await generate_meme_segments(ctx.args["topic"], count=ctx.args["count"], tone=ctx.args.get("tone"))
        return Reply(blocks=meme_blocks(meme), result=meme)

    @declare(
        "write",
        "Free-form copy",
        "Write copy of any kind: caption, script, hashtags, title, hook, or anything.",
        (
            Option("brief", OptionKind.TEXT, "what to write about", required=True, rest=True),
            Option(
                "kind",
                OptionKind.TEXT,
                f"e.g. {', '.join(KIND_GUIDES)} (or any other kind)",
                default="caption",
                max_length=40,
            ),
        ),
        example="/write kind=hashtags a vegan ramen recipe",
        estimate=text_estimate(lambda c: c.content_model, lambda a: 900),
    )
    async def write(self, ctx: CommandContext) -> Reply:
        await ctx.progress("✍️ Writing…", force=True)
        content = await generate_free_content(ctx.args["brief"], kind=ctx.args["kind"])
        return Reply(blocks=free_content_blocks(content), result=content)

    @declare(
        "trends",
        "Trending ideas for a niche",
        "Suggest trending video ideas, each with a hook, angle and why now.",
        (
            Option(
                "niche", OptionKind.TEXT, "your niche, e.g. home workouts", required=True, rest=True, max_length=200
            ),
            Option(
                "count",
                OptionKind.INTEGER,
                f"number of ideas (1-{MAX_IDEAS})",
                default=5,
                min_value=1,
                max_value=MAX_IDEAS,
            ),
        ),
        example="/trends indie game dev count=5",
        estimate=text_estimate(lambda c: c.trends_model, lambda a: 160 * a["count"] + 100),
    )
    async def trends(self, ctx: CommandContext) -> Reply:
        await ctx.progress("📈 Looking for trends…", force=True)
        report = await generate_trending_ideas(ctx.args["niche"], count=ctx.args["count"])
        return Reply(blocks=trend_blocks(report), result=report)

    @declare(
        "character",
        "Analyse a character image",
        "Analyse the character in an image and remember it for later.",
        (
            Option("image", OptionKind.IMAGE, "the character image", required=True),
            Option("name", OptionKind.TEXT, "a name to remember it by", rest=True, max_length=60),
        ),
        example="/character Captain Whiskers (with an image)",
        estimate=text_estimate(lambda c: c.vision_model, lambda a: 900, image_tokens=VISION_IMAGE_TOKENS),
    )
    async def character(self, ctx: CommandContext) -> Reply:
        if ctx.image is None:
            raise UserInputError("Send an image with /character (as the caption, or reply to the image).")
        await ctx.progress("🔍 Looking at your character…", force=True)
        data = await ctx.image.read()
        analysis = await analyze_character_from_image(data, name=ctx.args.get("name"))
        image = CharacterImage(data=data, mime_type=analysis.image_mime_type)
        await self.characters.remember(ctx.user.key, analysis.profile, image)
        return Reply(blocks=character_blocks(analysis), result=analysis)

    @declare(
        "video",
        "Video from a prompt",
        "Make a 4-8 s video with Veo from a prompt, a story segment or an image.",
        (
            Option("prompt", OptionKind.TEXT, "what happens in the video", rest=True),
            Option("duration", OptionKind.CHOICE, "seconds: 4, 6 or 8", choices=("4", "6", "8")),
            Option("aspect", OptionKind.CHOICE, "9:16 (vertical) or 16:9", default="9:16", choices=("9:16", "16:9")),
            Option(
                "segment",
                OptionKind.INTEGER,
                "use segment N of your last story",
                min_value=1,
                max_value=MAX_LONG_SEGMENTS,
            ),
            SAME_CHARACTER,
            Option("image", OptionKind.IMAGE, "a first frame to animate"),
        ),
        example="/video a cat surfing at sunset duration=8 aspect=9:16",
        estimate=video_estimate,
        upload_action="upload_video",
        upstream="media",
        confirms_late=True,
    )
    async def video(self, ctx: CommandContext) -> Reply:
        prompt: str | None = ctx.args.get("prompt")
        duration = int(ctx.args["duration"]) if ctx.args.get("duration") else None
        segment_number: int | None = ctx.args.get("segment")
        if segment_number is not None:
            story = self.memory.last_story(ctx.user.key)
            if story is None:
                raise UserInputError("segment= refers to your last story, and you have none yet. Use /story first.")
            if segment_number > len(story.segments):
                raise UserInputError(
                    f"Your last story has {plural(len(story.segments), 'segment')}; there is no {segment_number}."
                )
            segment = story.segments[segment_number - 1]
            prompt = f"{segment.visual_prompt} {prompt or ''}".strip()
            duration = duration or segment.duration_seconds
        if not prompt:
            raise UserInputError("Describe the video, or give segment=N of your last story.")
        character = await self.character_for(ctx)
        image = await ctx.image.read() if ctx.image is not None else None
        if image is None and (character_image := await self.character_image_for(ctx)) is not None:
            image = character_image.data
        request = VideoRequest(
            prompt=prompt,
            duration_seconds=duration or 8,
            aspect_ratio=ctx.args["aspect"],
            image=image,
            character=character,
        )
        validate_video_request(request)
        await ctx.before_paid_call()
        job_id = await self.jobs.jobs.create_video_job(address_of(ctx), request, ctx.take_reservation())
        await ctx.progress(f"🎬 Video job {job_id[:8]} created; sending it to the studio…", force=True)
        return await self.jobs.run(job_id, ctx)

    @declare(
        "short",
        "A finished short from one idea",
        "Story, one Veo clip per segment, narration, captions, thumbnail and copy: one finished vertical "
        "short, at one price you confirm once.",
        (
            IDEA,
            Option(
                "segments",
                OptionKind.INTEGER,
                f"number of clips ({MIN_SHORT_SEGMENTS}-{MAX_SHORT_SEGMENTS})",
                default=5,
                min_value=MIN_SHORT_SEGMENTS,
                max_value=MAX_SHORT_SEGMENTS,
            ),
            Option("aspect", OptionKind.CHOICE, "9:16 (vertical) or 16:9", default="9:16", choices=("9:16", "16:9")),
            SAME_CHARACTER,
            Option(
                "voice",
                OptionKind.TEXT,
                "narration voice, e.g. Kore or Puck; none: the clips' own sound",
                max_length=40,
            ),
            Option("captions", OptionKind.CHOICE, "burn captions in: on or off", default="on", choices=("on", "off")),
        ),
        example="/short a lighthouse keeper befriends a storm segments=6",
        estimate=short_estimate,
        upload_action="upload_video",
        upstream="media",
        confirms_late=True,
    )
    async def short(self, ctx: CommandContext) -> Reply:
        budget = ctx.upload_limit or service_config().short_max_bytes
        idea = check_short_request(ctx.args["idea"], ctx.args["segments"], budget)
        voice = narration_voice(ctx.args.get("voice"))
        character = await self.character_for(ctx)
        character_image = await self.character_image_for(ctx) if character is not None else None
        await ctx.before_paid_call()
        payload = ShortPayload(
            reservation=ctx.take_reservation(),
            idea=idea,
            segments=ctx.args["segments"],
            aspect=ctx.args["aspect"],
            character=character,
            voice=voice,
            captions=ctx.args["captions"] == "on",
            byte_budget=budget,
        )
        job_id = await self.jobs.jobs.create_short_job(
            address_of(ctx), payload, character_image.data if character_image is not None else None
        )
        await ctx.progress(f"🎞️ Short {job_id[:8]} started: writing the story…", force=True)
        return await self.jobs.run(job_id, ctx)

    @declare(
        "thumbnail",
        "Thumbnail image",
        "Draw a thumbnail for a title (or your last story).",
        (
            Option(
                "title",
                OptionKind.TEXT,
                "the video's title (default: your last story)",
                rest=True,
                max_length=MAX_TITLE_CHARS,
            ),
            Option("aspect", OptionKind.CHOICE, "16:9, 9:16 or 1:1", default="16:9", choices=("16:9", "9:16", "1:1")),
            SAME_CHARACTER,
        ),
        example="/thumbnail I survived 24 hours in a library",
        estimate=thumbnail_estimate,
        upload_action="upload_photo",
        upstream="media",
        confirms_late=True,
    )
    async def thumbnail(self, ctx: CommandContext) -> Reply:
        title: str | None = ctx.args.get("title")
        summary = None
        story = self.memory.last_story(ctx.user.key)
        if not title:
            if story is None:
                raise UserInputError("Give the video's title, e.g. /thumbnail How I trained a dragon")
            title = story.title
            summary = " ".join(seg.narration for seg in story.segments[:3])
        character = await self.character_for(ctx)
        character_image = await self.character_image_for(ctx) if character is not None else None
        request = ThumbnailRequest(
            title=title,
            story_summary=summary,
            aspect_ratio=ctx.args["aspect"],
            character=character,
            character_image=character_image.data if character_image is not None else None,
        )
        request = validate_thumbnail_request(request)
        await ctx.before_paid_call()
        job_id = await self.jobs.jobs.create_thumbnail_job(address_of(ctx), request, ctx.take_reservation())
        await ctx.progress("🖼️ Drawing your thumbnail…", force=True)
        return await self.jobs.run(job_id, ctx)

    @declare(
        "jobs",
        "Your generation jobs",
        "List your shorts, videos and thumbnails with state, age and cost; resend a result, retry a failed "
        "short or cancel a queued job.",
        (
            Option(
                "request",
                OptionKind.TEXT,
                "list (default), resend <id>, retry <id> or cancel <id>",
                rest=True,
                max_length=60,
            ),
        ),
        example="/jobs resend 1a2b3c4d",
        upstream=None,
    )
    async def list_jobs(self, ctx: CommandContext) -> Reply:
        return await self.jobs.list_or_act(ctx)

    @declare(
        "schedule",
        "Daily trend posts for this chat (admins)",
        "Post trending ideas for a niche into this chat every day at a local time.",
        (
            Option(
                "request",
                OptionKind.TEXT,
                "add <niche> <HH:MM> <time zone>, list, or remove <id>",
                rest=True,
                max_length=300,
            ),
        ),
        example="/schedule add indie game dev 09:30 Europe/Berlin",
        admin_only=True,
        upstream=None,
    )
    async def schedule(self, ctx: CommandContext) -> Reply:
        if self.schedules is None:
            raise UserInputError("Schedules are not available in this setup.")
        return await schedule_command(self.schedules, ctx)

    @declare(
        "help",
        "What the bot can do",
        "List the commands, or explain one.",
        (Option("command", OptionKind.TEXT, "a command to explain", rest=True, max_length=40),),
        example="/help story",
        upstream=None,
    )
    async def show_help(self, ctx: CommandContext) -> Reply:
        topic = (ctx.args.get("command") or "").lstrip("/").strip().lower()
        if topic:
            command = self.catalogue.get(topic)
            if command is None:
                raise UserInputError(f"There is no /{topic}. Send /help for the list.")
            return Reply(blocks=[command.help_text(ctx.chat.platform)])
        lines = ["🎬 Reelwright turns ideas into short-video material. Commands:"]
        lines += [f"/{c.name}: {c.summary}" for c in self.catalogue]
        lines.append("Send /help <command> for its options.")
        return Reply(blocks=["\n".join(lines)])


def build_commands(
    memory: UserMemory | None = None,
    *,
    jobs: JobCommands,
    characters: CharacterBook | None = None,
    schedules: ScheduleService | None = None,
) -> CommandSet:
    """The catalogue every adapter registers; /video and /thumbnail run as durable ``jobs``; the
    character book keeps its images in the jobs' MEDIA_DIR unless another book is given."""
    catalogue = CommandSet()
    handlers = ReelwrightCommands(
        catalogue,
        memory or UserMemory(),
        jobs,
        characters or DatabaseCharacterBook(jobs.jobs.media_dir),
        schedules,
    )
    for command in declared_commands(handlers):
        catalogue.add(command)
    return catalogue
