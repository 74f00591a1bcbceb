"""Guardrails: a table of bad inputs, each sent to the real bot on Telegram AND Discord.

One production runtime (``bot.runtime.start_runtime``: guards, durable jobs, schedules, the store
on SQLite and then on PostgreSQL) serves both platforms for the whole module: the real python-telegram-bot application against
the fake Bot API and the real discord.py client against the fake Discord, with the AI fakes behind.
Every case must end in exactly one clear answer (the expected text), no request to the AI fakes
(no paid call), no job row, and a bot that still answers ``/help`` afterwards. Discord declares ranges and
choices to its clients, but a modified client can send anything, so out-of-range values go into the
interaction payload as they are. The SSRF cases put an "attacker" server on 127.0.0.1 and check
that the bot never fetched a URL a user gave it (only the platform's own file URLs).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import func, select

from bot.core.commands import OptionKind
from bot.runtime import Runtime, start_runtime
from bot.telegram.app import TelegramOptions, TelegramService
from connectors.database import sessions
from connectors.settings import load_settings
from services.config import ServiceConfig, configure_services
from services.prompts import storable
from services.store.models import CharacterRecord, JobRecord
from tests.bot.helpers import bomb_png, catalogue, png_bytes
from tests.discord.conftest import start_bot, stop_bot
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault
from tests.fakes.discord_api import DiscordCall, FakeDiscord
from tests.fakes.telegram_api import ApiCall, FakeTelegramAPI
from tests.telegram.conftest import EAGER_PROGRESS, TOKEN

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1024 * 1024
DISCORD_ANSWER_SECONDS = 3.0
DISCORD_ADMIN_ID = "1400000000000009999"
TELEGRAM_SEND_METHODS = ("sendMessage", "sendPhoto", "sendVideo", "sendDocument", "sendMediaGroup")
HELP_LISTING = "Reelwright turns ideas into short-video material"
#: What a crash or a leaked exception looks like to a user: never acceptable as the answer to bad input.
NOT_CLEAR = re.compile(r"Traceback|Something went wrong|Exception|Error:|\bref [0-9a-f]{8}\b|None|<[a-z_.]+ object")


# -- the "attacker" URL target ---------------------------------------------------------------------


class AttackerServer:
    """A loopback HTTP server standing in for an internal URL; records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.origin = ""

    async def start(self) -> None:
        async def record(request: web.Request) -> web.Response:
            self.requests.append(f"{request.method} {request.path_qs}")
            # A perfectly valid image: if the bot fetched it, it would go on to a paid vision call.
            return web.Response(body=png_bytes(), content_type="image/png")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.origin = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- the module's bots -------------------------------------------------------------------------------


@dataclass
class World:
    runtime: Runtime
    telegram: TelegramService
    tg_api: FakeTelegramAPI
    discord: FakeDiscord
    text: FakeOpenRouter
    media: FakeGenAI
    attacker: AttackerServer
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def paid_calls(self) -> int:
        return len(self.text.requests) + len(self.media.requests)

    async def job_rows(self) -> int:
        async with sessions()() as session:
            return int(await session.scalar(select(func.count()).select_from(JobRecord)) or 0)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """The bots on one store: SQLite, then PostgreSQL (which refuses NUL and lone surrogates in text)."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    home: Path = tmp_path_factory.mktemp("bad_inputs")
    database_url = (
        request.getfixturevalue("postgres_url")
        if request.param == "postgresql"
        else f"sqlite+aiosqlite:///{home / 'reelwright.sqlite3'}"
    )
    text, media, tg_api, fake_discord, attacker = (
        FakeOpenRouter(),
        FakeGenAI(),
        FakeTelegramAPI(TOKEN),
        FakeDiscord(),
        AttackerServer(),
    )
    for server in (text, media, tg_api, fake_discord, attacker):
        await server.start()
    settings = load_settings(
        _env_file=None,
        openrouter_api_key="test-openrouter-key",
        openrouter_base_url=text.base_url,
        text_max_retries=0,
        google_api_key="test-google-key",
        genai_base_url=media.base_url,
        media_max_retries=1,
        telegram_bot_token=TOKEN,
        telegram_api_base_url=tg_api.api_base,
        telegram_file_base_url=tg_api.file_base,
        telegram_local_api=False,  # the fake plays Telegram's cloud API, 20 MB download limit included
        discord_bot_token=fake_discord.token,
        discord_api_base_url=fake_discord.api_base,
        discord_gateway_url=fake_discord.gateway_url,
        database_url=database_url,
        media_dir=home / "media",
        video_poll_initial_seconds=0.05,
        video_poll_max_seconds=0.1,
        # Production guards as shipped, the $1 cost question included: /video and /thumbnail
        # validate their input before they ask, so a bad request gets its error, never a price.
        admin_users=DISCORD_ADMIN_ID,
        # Room for one /short (about $10 for three clips) a user; small shorts encode fast.
        budget_user_daily_usd=30.0,
        budget_chat_daily_usd=60.0,
        short_long_side=256,
    )
    runtime = await start_runtime(settings)
    telegram = TelegramService(runtime, TelegramOptions(progress=EAGER_PROGRESS, poll_timeout=5))
    await telegram.start()
    stop, task = await start_bot(fake_discord, runtime)
    yield World(runtime, telegram, tg_api, fake_discord, text, media, attacker)
    await stop_bot(stop, task)
    await telegram.stop()
    await runtime.close()
    for server in (attacker, fake_discord, tg_api, media, text):
        await server.stop()
    configure_services(ServiceConfig())
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


# -- how a case is sent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An upload: its bytes (made on use), name, declared type, and a declared size that may lie."""

    make: Callable[[], bytes]
    filename: str = "upload.png"
    content_type: str = "image/png"
    declared_size: int | None = None
    as_document: bool = False  # Telegram: a document instead of a compressed photo


@dataclass(frozen=True)
class Tg:
    """A Telegram message: the text (or caption, with an image), and who sends it where."""

    text: str
    image: Image | None = None
    group_member: bool = False  # sent by a plain member of a supergroup (not an admin)


@dataclass(frozen=True)
class Dc:
    """A Discord slash command as a (possibly modified) client sends it."""

    command: str
    options: dict[str, Any] = field(default_factory=dict)
    image: Image | None = None
    image_url: str | None = None  # the attachment's url (and proxy_url), "{attacker}" = the attacker server
    admin: bool = False  # sent by a user listed in ADMIN_USERS
    member: bool = False  # sent by a guild member without Manage Server or Administrator


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # a regex the one answer must match
    telegram: Tg | None = None
    discord: Dc | None = None
    ssrf: bool = False
    discord_expect: str | None = None  # when Discord's client-side shape makes the answer differ


def both(text: str, command: str, options: dict[str, Any] | None = None, **tg: Any) -> dict[str, Any]:
    return {"telegram": Tg(text, **tg), "discord": Dc(command, options or {})}


def character(image: Image) -> dict[str, Any]:
    """``/character`` with ``image``: a Telegram caption on it, a Discord attachment."""
    return {"telegram": Tg("/character Hero", image), "discord": Dc("character", {"name": "Hero"}, image)}


def text_file() -> bytes:
    return b"just some notes, not a picture\n"


def truncated_png() -> bytes:
    return png_bytes(64, 64)[:60]


def bmp() -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="BMP")
    return buffer.getvalue()


def svg() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'


def over_max_image_bytes() -> bytes:
    """A PNG signature padded past MAX_IMAGE_BYTES (10 MB) but under Telegram's 20 MB download limit."""
    return b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * MB)


LONG = ("a dragon learns to fly " * 218).strip()  # 5,013 characters, over MAX_PROMPT_CHARS (2,000)
RANGE = r"must be between {lo} and {hi} \(got {got}\)"
NOT_AN_IMAGE = r"That file is not an image I can read\. Please send a PNG, JPEG or WebP\."
METADATA = "https://169.254.169.254/latest/meta-data/"
#: Control characters and noncharacters (PostgreSQL refuses NUL in text): never stored, never sent upstream.
CONTROL = "\x00\x01\x07\x1b\x7f\x85\x9f\ufffe\uffff\U0010ffff"

# A payload discord.py cannot match to the command's declared options (a missing required option, an
# attachment option holding a URL): a modified client, or a Discord client showing a stale command.
STALE_SHAPE = r"sent this command in an older or unexpected shape\. Reload Discord"

CASES: list[Case] = [
    # -- prompts ---------------------------------------------------------------------------------
    Case(
        "story-empty",
        r"Missing idea: what the story is about\nUsage: /story <idea>",
        **both("/story", "story"),
        discord_expect=STALE_SHAPE,
    ),
    Case("story-whitespace-only", r"Missing idea", **both("/story  \t  ", "story", {"idea": "   \t  "})),
    Case(
        "story-unicode-spaces-only",
        r"Missing idea|Please describe the story idea",
        **both("/story \u00a0\u3000\u2003", "story", {"idea": "\u00a0\u3000\u2003"}),
    ),
    Case(
        "story-zero-width-spaces-only",
        r"Missing idea|Please describe the story idea",
        **both("/story \u200b\u200b\u2060\ufeff", "story", {"idea": "\u200b\u200b\u2060\ufeff"}),
    ),
    Case(
        "story-5000-chars",
        r"The story idea is 5013 characters; the limit is 2000\.",
        **both(f"/story {LONG}", "story", {"idea": LONG}),
    ),
    Case(
        "meme-5000-chars",
        r"The meme topic is 5013 characters; the limit is 2000\.",
        **both(f"/meme {LONG}", "meme", {"topic": LONG}),
    ),
    Case(
        "trends-niche-over-200",
        r"niche is 230 characters; the limit is 200\.",
        **both(f"/trends {'n' * 230}", "trends", {"niche": "n" * 230}),
    ),
    Case(
        "write-kind-over-40",
        r"kind is 50 characters; the limit is 40\.",
        **both(f"/write a caption kind={'k' * 50}", "write", {"brief": "a caption", "kind": "k" * 50}),
    ),
    # -- integer options -------------------------------------------------------------------------
    Case(
        "story-segments-0",
        RANGE.format(lo=1, hi=12, got=0),
        **both("/story a dragon segments=0", "story", {"idea": "a dragon", "segments": 0}),
    ),
    Case(
        "story-segments-13",
        RANGE.format(lo=1, hi=12, got=13),
        **both("/story a dragon segments=13", "story", {"idea": "a dragon", "segments": 13}),
    ),
    Case(
        "story-segments-negative",
        RANGE.format(lo=1, hi=12, got=-1),
        **both("/story a dragon segments=-1", "story", {"idea": "a dragon", "segments": -1}),
    ),
    Case(
        "story-segments-abc",
        r"segments must be a whole number \(got 'abc'\)",
        **both("/story a dragon segments=abc", "story", {"idea": "a dragon", "segments": "abc"}),
    ),
    Case(
        "story-segments-1e9",
        r"segments must be (a whole number \(got '1e9'\)|between 1 and 12 \(got 1000000000\))",
        **both("/story a dragon segments=1e9", "story", {"idea": "a dragon", "segments": 1_000_000_000}),
    ),
    Case(
        "story-segments-fraction",
        r"segments must be a whole number \(got '?2\.5'?\)",
        **both("/story a dragon segments=2.5", "story", {"idea": "a dragon", "segments": 2.5}),
    ),
    Case(
        "longstory-segments-5",
        RANGE.format(lo=6, hi=60, got=5),
        **both("/longstory a heist segments=5", "longstory", {"idea": "a heist", "segments": 5}),
    ),
    Case(
        "longstory-segments-61",
        RANGE.format(lo=6, hi=60, got=61),
        **both("/longstory a heist segments=61", "longstory", {"idea": "a heist", "segments": 61}),
    ),
    Case(
        "storysets-sets-1",
        RANGE.format(lo=2, hi=5, got=1),
        **both("/storysets a cat sets=1", "storysets", {"idea": "a cat", "sets": 1}),
    ),
    Case(
        "storysets-sets-9",
        RANGE.format(lo=2, hi=5, got=9),
        **both("/storysets a cat sets=9", "storysets", {"idea": "a cat", "sets": 9}),
    ),
    Case(
        "storysets-segments-9",
        RANGE.format(lo=1, hi=8, got=9),
        **both("/storysets a cat segments=9", "storysets", {"idea": "a cat", "segments": 9}),
    ),
    Case(
        "meme-count-0",
        RANGE.format(lo=1, hi=5, got=0),
        **both("/meme mondays count=0", "meme", {"topic": "mondays", "count": 0}),
    ),
    Case(
        "meme-count-6",
        RANGE.format(lo=1, hi=5, got=6),
        **both("/meme mondays count=6", "meme", {"topic": "mondays", "count": 6}),
    ),
    Case(
        "trends-count-11",
        RANGE.format(lo=1, hi=10, got=11),
        **both("/trends indie games count=11", "trends", {"niche": "indie games", "count": 11}),
    ),
    Case(
        "story-segments-twice",
        r"segments is given twice\.",
        telegram=Tg("/story a dragon segments=3 segments=4"),
    ),
    # -- choices ---------------------------------------------------------------------------------
    Case(
        "video-duration-5",
        r"duration must be one of 4, 6, 8 \(got '5'\)",
        **both("/video a cat surfing duration=5", "video", {"prompt": "a cat surfing", "duration": "5"}),
    ),
    Case(
        "video-aspect-4:3",
        r"aspect must be one of 9:16, 16:9 \(got '4:3'\)",
        **both("/video a cat surfing aspect=4:3", "video", {"prompt": "a cat surfing", "aspect": "4:3"}),
    ),
    Case(
        "thumbnail-aspect-2:1",
        r"aspect must be one of 16:9, 9:16, 1:1 \(got '2:1'\)",
        **both("/thumbnail My Dragon aspect=2:1", "thumbnail", {"title": "My Dragon", "aspect": "2:1"}),
    ),
    # -- missing context -------------------------------------------------------------------------
    Case(
        "video-no-prompt-no-segment",
        r"Describe the video, or give segment=N of your last story\.",
        **both("/video", "video"),
    ),
    Case(
        "video-segment-3-without-a-story",
        r"segment= refers to your last story, and you have none yet\. Use /story first\.",
        **both("/video segment=3", "video", {"segment": 3}),
    ),
    Case(
        "video-unknown-character",
        r"I don't know a character called 'ghost' \(yours: none yet\)\. Use /character first\.",
        **both("/video a walk character=ghost", "video", {"prompt": "a walk", "character": "ghost"}),
    ),
    Case(
        "story-unknown-character",
        r"I don't know a character called 'ghost'",
        **both("/story a walk character=ghost", "story", {"idea": "a walk", "character": "ghost"}),
    ),
    Case(
        "thumbnail-no-title-no-story",
        r"Give the video's title, e\.g\. /thumbnail How I trained a dragon",
        **both("/thumbnail", "thumbnail"),
    ),
    # -- images ----------------------------------------------------------------------------------
    Case(
        "character-without-image",
        r"/character needs an image\.(.|\n)*Usage: /character \(attach an image\) \[name\]",
        **both("/character Nobody", "character", {"name": "Nobody"}),
        discord_expect=STALE_SHAPE,
    ),
    Case(
        "character-0-byte-image",
        r"The image is empty \(0 bytes\)\. Please send the picture again\.",
        **character(Image(lambda: b"")),
    ),
    Case(
        "character-text-file",
        NOT_AN_IMAGE,
        **character(Image(text_file, "notes.txt", "text/plain", as_document=True)),
    ),
    Case("character-text-file-named-png", NOT_AN_IMAGE, **character(Image(text_file, "cat.png", as_document=True))),
    Case("character-truncated-png", NOT_AN_IMAGE, **character(Image(truncated_png, as_document=True))),
    Case(
        "character-decompression-bomb",
        r"The image is too large to process \(too many pixels\)\.|30000×30000 pixels; the limit is 40 megapixels",
        **character(Image(bomb_png, "bomb.png", as_document=True)),
    ),
    Case(
        "character-over-max-image-bytes",
        r"The image is 11\.0 MB; the limit is 10(\.0)? MB\.",
        **character(Image(over_max_image_bytes, "big.png", as_document=True)),
    ),
    Case(
        "character-declared-25-mb",
        r"That file is 25\.0 MB; Telegram lets bots download files up to 20 MB|"
        r"The image is 25\.0 MB; the limit is 10(\.0)? MB\.",
        **character(Image(png_bytes, "huge.png", declared_size=25 * MB)),
    ),
    Case(
        "character-bmp",
        r"BMP images are not supported\. Please send a PNG, JPEG or WebP\.",
        **character(Image(bmp, "cat.bmp", "image/bmp", as_document=True)),
    ),
    Case("character-svg", NOT_AN_IMAGE, **character(Image(svg, "cat.svg", "image/svg+xml", as_document=True))),
    Case(
        "video-text-file-as-first-frame",
        NOT_AN_IMAGE,
        telegram=Tg("/video the hero waves", Image(text_file, "notes.txt", "text/plain", as_document=True)),
        discord=Dc("video", {"prompt": "the hero waves"}, Image(text_file, "notes.txt", "text/plain")),
    ),
    # -- jobs, schedules, help, unknown commands --------------------------------------------------
    Case(
        "jobs-resend-unknown-id",
        r"You have no job deadbeef\. /jobs lists yours\.",
        **both("/jobs resend deadbeef", "jobs", {"request": "resend deadbeef"}),
    ),
    Case(
        "jobs-cancel-unknown-id",
        r"You have no job deadbeef\. /jobs lists yours\.",
        **both("/jobs cancel deadbeef", "jobs", {"request": "cancel deadbeef"}),
    ),
    Case(
        "short-segments-2",
        r"segments must be between 3 and 8 \(got 2\)\.",
        **both("/short a storm segments=2", "short", {"idea": "a storm", "segments": 2}),
    ),
    Case(
        "short-segments-9",
        r"segments must be between 3 and 8 \(got 9\)\.",
        **both("/short a storm segments=9", "short", {"idea": "a storm", "segments": 9}),
    ),
    Case(
        "short-voice-not-a-name",
        r'"K0re" is not a voice name',
        **both("/short a storm voice=K0re", "short", {"idea": "a storm", "voice": "K0re"}),
    ),
    Case(
        "short-captions-maybe",
        r"captions must be one of on, off \(got 'maybe'\)\.",
        **both("/short a storm captions=maybe", "short", {"idea": "a storm", "captions": "maybe"}),
    ),
    Case(
        "short-unknown-character",
        r"I don't know a character called 'nobody'",
        **both("/short a storm character=nobody", "short", {"idea": "a storm", "character": "nobody"}),
    ),
    Case(
        "jobs-retry-unknown-id",
        r"You have no job deadbeef\. /jobs lists yours\.",
        **both("/jobs retry deadbeef", "jobs", {"request": "retry deadbeef"}),
    ),
    Case(
        "jobs-explode",
        r"Use /jobs, /jobs resend <id>, /jobs retry <id> or /jobs cancel <id>\.",
        **both("/jobs explode", "jobs", {"request": "explode"}),
    ),
    Case(
        "jobs-request-over-60",
        r"request is 70 characters; the limit is 60\.",
        **both(f"/jobs {'x' * 70}", "jobs", {"request": "x" * 70}),
    ),
    Case(
        "schedule-by-a-non-admin",
        r"Only admins of this chat can use /schedule\.",
        telegram=Tg("/schedule add cooking 09:30 Europe/Berlin", group_member=True),
        discord=Dc("schedule", {"request": "add cooking 09:30 Europe/Berlin"}, member=True),
    ),
    Case(
        "schedule-time-25:00",
        r"'25:00' is not a time; use 24-hour HH:MM, e\.g\. 09:30\.",
        telegram=Tg("/schedule add cooking 25:00 Europe/Berlin"),
        discord=Dc("schedule", {"request": "add cooking 25:00 Europe/Berlin"}, admin=True),
    ),
    Case(
        "schedule-unknown-time-zone",
        r"time zone",
        telegram=Tg("/schedule add cooking 09:30 Mars/Olympus_Mons"),
        discord=Dc("schedule", {"request": "add cooking 09:30 Mars/Olympus_Mons"}, admin=True),
    ),
    Case(
        "confirm-unknown-code",
        r"Nothing to confirm with that code \(it may have expired\)\. Run the command again\.",
        **both("/confirm zzzzzz", "confirm", {"code": "zzzzzz"}),
    ),
    Case(
        "help-nope", r"There is no /nope\. Send /help for the list\.", **both("/help nope", "help", {"command": "nope"})
    ),
    Case(
        "unknown-command",
        r"Unknown command /frobnicate\. Send /help to see what I can do\.",
        telegram=Tg("/frobnicate now"),
    ),
    # -- text the store cannot hold; every length checked before a job row exists -----------------
    Case(
        "story-control-characters-only",
        r"Missing idea",
        **both(f"/story {CONTROL}", "story", {"idea": CONTROL}),
    ),
    Case(
        "story-lone-surrogates-only",  # discord.py's JSON parser (orjson) refuses them before the bot
        r"Missing idea",
        telegram=Tg("/story \udfff\ud800"),
    ),
    Case("longstory-nul-only", r"Missing idea", **both("/longstory \x00\x00", "longstory", {"idea": "\x00\x00"})),
    Case("storysets-nul-only", r"Missing idea", **both("/storysets \x00", "storysets", {"idea": "\x00"})),
    Case("meme-control-characters-only", r"Missing topic", **both(f"/meme {CONTROL}", "meme", {"topic": CONTROL})),
    Case("write-control-characters-only", r"Missing brief", **both(f"/write {CONTROL}", "write", {"brief": CONTROL})),
    Case(
        "trends-control-characters-only", r"Missing niche", **both(f"/trends {CONTROL}", "trends", {"niche": CONTROL})
    ),
    Case(
        "video-control-characters-only",
        r"Describe the video, or give segment=N of your last story\.",
        **both(f"/video {CONTROL}", "video", {"prompt": CONTROL}),
    ),
    Case(
        "thumbnail-control-characters-only",
        r"Give the video's title, e\.g\. /thumbnail How I trained a dragon",
        **both(f"/thumbnail {CONTROL}", "thumbnail", {"title": CONTROL}),
    ),
    Case(
        "thumbnail-zero-width-title",
        r"Please describe the thumbnail title\.",
        **both("/thumbnail \u200b\u2060\u200b", "thumbnail", {"title": "\u200b\u2060\u200b"}),
    ),
    Case(
        "thumbnail-10000-chars",
        r"title is 10000 characters; the limit is 300\.",
        **both(f"/thumbnail {'t' * 10_000}", "thumbnail", {"title": "t" * 10_000}),
    ),
    Case(
        "video-10000-chars",
        r"The video prompt is 10000 characters; the limit is 2000\.",
        **both(f"/video {'v' * 10_000}", "video", {"prompt": "v" * 10_000}),
    ),
    Case(
        "video-character-name-with-nul",
        r"I don't know a character called 'ghost'",
        **both("/video a walk character=gh\x00ost", "video", {"prompt": "a walk", "character": "gh\x00ost"}),
    ),
    Case(
        "story-character-name-with-controls",
        r"I don't know a character called 'ghost'",
        **both(
            "/story a walk character=g\x1bho\x7fst\x00", "story", {"idea": "a walk", "character": "g\x1bho\x7fst\x00"}
        ),
    ),
    Case(
        "thumbnail-character-name-with-nul",
        r"I don't know a character called 'ghost'",
        **both(
            "/thumbnail My Dragon character=\x00ghost", "thumbnail", {"title": "My Dragon", "character": "\x00ghost"}
        ),
    ),
    Case(
        "jobs-resend-id-with-nul",
        r"You have no job deadbeef\. /jobs lists yours\.",
        **both("/jobs resend dead\x00beef", "jobs", {"request": "resend dead\x00beef"}),
    ),
    Case(
        "schedule-remove-id-with-nul",
        r"This chat has no schedule 42\.",
        telegram=Tg("/schedule remove 4\x002"),
        discord=Dc("schedule", {"request": "remove 4\x002"}, admin=True),
    ),
    Case(
        "schedule-add-control-characters-as-the-niche",
        r"Give a niche, a time and a time zone",
        telegram=Tg(f"/schedule add {CONTROL} 09:30 Europe/Berlin"),
        discord=Dc("schedule", {"request": f"add {CONTROL} 09:30 Europe/Berlin"}, admin=True),
    ),
    Case("help-with-nul", r"There is no /nope\.", **both("/help no\x00pe", "help", {"command": "no\x00pe"})),
    # -- URLs from users are never fetched (SSRF) -------------------------------------------------
    Case(
        "ssrf-metadata-url-as-the-character-image",
        r"/character needs an image\.",
        telegram=Tg(f"/character {METADATA}"),
        discord=Dc("character", {"image": METADATA}),
        ssrf=True,
        discord_expect=STALE_SHAPE,
    ),
    Case(
        "ssrf-attacker-url-as-the-character-image",
        r"/character needs an image\.",
        telegram=Tg("/character image={attacker}/latest/meta-data"),
        discord=Dc("character", {"image": "{attacker}/latest/meta-data/avatar.png"}),
        ssrf=True,
        discord_expect=STALE_SHAPE,
    ),
    Case(
        "ssrf-attachment-url-off-the-cdn",
        r"does not come from Discord, so I will not fetch it",
        discord=Dc("character", {"name": "Hero"}, Image(png_bytes), image_url="{attacker}/latest/meta-data/avatar.png"),
        ssrf=True,
    ),
]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for platform in ("telegram", "discord"):
            if getattr(case, platform) is None:
                continue
            params.append(pytest.param(platform, case, id=f"{platform}-{case.id}"))
    return params


def fill(value: Any, world: World) -> Any:
    if isinstance(value, str):
        return value.replace("{attacker}", world.attacker.origin)
    if isinstance(value, dict):
        return {key: fill(item, world) for key, item in value.items()}
    return value


# -- Telegram ----------------------------------------------------------------------------------------


async def telegram_send(world: World, message: dict[str, Any]) -> list[ApiCall]:
    """Push one message, wait until PTB fetched and fully handled it, return what the bot posted there."""
    api, chat_id = world.tg_api, message["chat"]["id"]
    before = len(api.sent_to(chat_id))
    await api.push(message)
    await api.wait_fetched(api.last_update_id)
    assert world.telegram.application is not None
    await world.telegram.application.update_queue.join()
    return api.sent_to(chat_id)[before:]


def telegram_answer(calls: list[ApiCall]) -> str:
    """The one final answer: one message, possibly a status line edited (in place) into the answer."""
    posts = [c for c in calls if c.method in TELEGRAM_SEND_METHODS]
    assert [c.method for c in posts] == ["sendMessage"], [(c.method, c.params.get("text")) for c in calls]
    edits = [c for c in calls if c.method == "editMessageText"]
    status_id = posts[0].answered["result"]["message_id"]  # type: ignore[index]
    assert all(int(c.params["message_id"]) == status_id for c in edits)
    return (edits[-1] if edits else posts[0]).params["text"]


async def run_telegram(world: World, send: Tg) -> str:
    api, number = world.tg_api, next(world.ids)
    user = 50_000 + number
    chat, chat_type = (-1_000_000 - number, "supergroup") if send.group_member else (user, "private")
    text = fill(send.text, world)
    media: dict[str, Any] = {}
    if send.image is not None:
        image = send.image
        if image.as_document:
            media["document"] = api.document(
                image.make(), image.filename, image.content_type, file_size=image.declared_size
            )
        else:
            media["photo"] = api.photo(image.make(), file_size=image.declared_size)
        message = api.message(chat, caption=text, user_id=user, chat_type=chat_type, **media)
    else:
        message = api.message(chat, text, user_id=user, chat_type=chat_type)
    answer = telegram_answer(await telegram_send(world, message))
    # Still serving: the same user's /help is answered.
    after = telegram_answer(await telegram_send(world, api.message(chat, "/help", user_id=user, chat_type=chat_type)))
    assert HELP_LISTING in after
    return answer


# -- Discord -----------------------------------------------------------------------------------------


def _answers(fake: FakeDiscord, d: dict[str, Any]) -> list[DiscordCall]:
    """Every call that answered interaction ``d``: the edit of @original carrying the answer (it always
    sets ``embeds``; progress edits only ``content``), follow-ups, and an immediate message response."""
    token, interaction_id = d["token"], d["id"]

    def answers(call: DiscordCall) -> bool:
        payload = call.payload if isinstance(call.payload, dict) else {}
        if call.route == "callback":
            return interaction_id in call.path and payload.get("type") == 4
        edited = call.route == "edit_original" and "embeds" in payload
        return token in call.path and (edited or call.route == "followup")

    return [call for call in fake.calls if answers(call)]


def _content(call: DiscordCall) -> str:
    payload = call.payload or {}
    if call.route == "callback":
        payload = payload.get("data") or {}
    parts = [payload.get("content") or ""]
    parts += [f"{e.get('title', '')}\n{e.get('description', '')}" for e in payload.get("embeds") or []]
    return "\n".join(part for part in parts if part)


async def discord_answer(fake: FakeDiscord, d: dict[str, Any]) -> str:
    """The first answer to ``d``; an error answers in milliseconds, so 3 s without one is no answer."""
    async with asyncio.timeout(DISCORD_ANSWER_SECONDS):
        await fake.wait_for(lambda _call: bool(_answers(fake, d)))
    return _content(_answers(fake, d)[0])


async def slash(fake: FakeDiscord, send: Dc, options: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``fake.slash``, as a member without any permission when ``send.member`` says so."""
    if not send.member:
        return await fake.slash(send.command, options, **kwargs)
    build = fake.interaction_payload

    def without_permissions(*args: Any, **kw: Any) -> dict[str, Any]:
        d = build(*args, **kw)
        d["member"]["permissions"] = "0"
        return d

    fake.interaction_payload = without_permissions  # type: ignore[method-assign]
    try:
        return await fake.slash(send.command, options, **kwargs)
    finally:
        del fake.interaction_payload


async def run_discord(world: World, send: Dc) -> str:
    fake, number = world.discord, next(world.ids)
    user_id = DISCORD_ADMIN_ID if send.admin else str(1_500_000_000_000_000_000 + number)
    user = {**fake.user, "id": user_id, "username": f"user{number}", "global_name": f"User {number}"}
    attachments = {}
    if send.image is not None:
        attachment = fake.add_attachment(send.image.filename, send.image.make(), send.image.content_type)
        if send.image.declared_size is not None:
            attachment["size"] = send.image.declared_size
        if send.image_url is not None:
            attachment["url"] = attachment["proxy_url"] = fill(send.image_url, world)
        attachments["image"] = attachment
    channel_posts = len(fake.calls_to("channel_message"))
    d = await slash(fake, send, fill(send.options, world), attachments=attachments, user=user)
    answer = await discord_answer(fake, d)
    # Still serving: the same user's /help is answered.
    assert HELP_LISTING in await discord_answer(fake, await fake.slash("help", {}, user=user))
    sender = world.runtime.senders["discord"]
    await sender.client.bridge.drain(5.0)  # type: ignore[attr-defined]
    assert len(_answers(fake, d)) == 1, [(c.route, _content(c)) for c in _answers(fake, d)]
    assert len(fake.calls_to("channel_message")) == channel_posts
    return answer


# -- the table ---------------------------------------------------------------------------------------


async def test_the_table_has_at_least_30_bad_inputs_per_platform() -> None:
    for platform in ("telegram", "discord"):
        cases = [case for case in CASES if getattr(case, platform) is not None]
        assert len(cases) >= 30, platform
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("platform", "case"), _params())
async def test_bad_input_gets_one_clear_answer_and_no_paid_call(world: World, platform: str, case: Case) -> None:
    paid_before, fetched_before, rows_before = world.paid_calls(), len(world.attacker.requests), await world.job_rows()
    if platform == "telegram":
        assert case.telegram is not None
        answer = await run_telegram(world, case.telegram)
    else:
        assert case.discord is not None
        answer = await run_discord(world, case.discord)
    if case.ssrf:
        assert world.attacker.requests[fetched_before:] == [], "the bot fetched a URL a user gave it"
    assert world.paid_calls() == paid_before, "bad input reached the AI upstream (a paid call)"
    assert await world.job_rows() == rows_before, "bad input left a job row behind"
    assert answer.startswith("⚠️ "), answer
    expect = case.discord_expect if platform == "discord" and case.discord_expect else case.expect
    assert re.search(expect, answer), answer
    assert not NOT_CLEAR.search(answer), answer


# -- text that is cleaned rather than refused --------------------------------------------------------

#: Characters the store cannot hold, mixed into valid text. Lone surrogates only on Telegram:
#: discord.py's JSON parser (orjson) refuses a payload holding one before the bot sees it.
JUNK = {"telegram": CONTROL + "\udfff\ud800", "discord": CONTROL}
EMOJI, PERSIAN = "👩\u200d💻", "می\u200cخواهم"  # a ZWJ inside an emoji, a ZWNJ inside a Persian word
CRASHED = re.compile(r"Traceback|Something went wrong|\bref [0-9a-f]{8}\b")
_values = itertools.count(1)


def dirty(platform: str) -> tuple[str, str]:
    """A new value (cached answers never hide a call) with the junk in it, and the same value clean."""
    junk, number = JUNK[platform], next(_values)
    return f"{junk}a{junk} dragon {number} {EMOJI} {PERSIAN}{junk}", f"a dragon {number} {EMOJI} {PERSIAN}"


def paid_text_options() -> list[Any]:
    """(command, option) for every text option of every command that calls a paid upstream; a
    ``character`` option only names a stored character and ``voice`` a prebuilt voice (the table
    covers both)."""
    return [
        pytest.param(command.name, option.name, id=f"{command.name}-{option.name}")
        for command in catalogue()
        if command.upstream is not None
        for option in command.options
        if option.kind is OptionKind.TEXT and option.name not in ("character", "voice")
    ]


def strings(value: Any) -> list[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def upstream_strings(world: World, text_from: int, media_from: int) -> list[str]:
    requests = world.text.requests[text_from:] + world.media.requests[media_from:]
    return [text for request in requests for text in strings(request.json)]


async def telegram_command(
    world: World, text: str, image: bytes | None = None, user: int | None = None
) -> tuple[int, list[str]]:
    """Send a command as ``user`` (default: a new one) in their private chat; (user id, every text
    the bot showed there)."""
    api = world.tg_api
    user = user if user is not None else 50_000 + next(world.ids)
    if image is None:
        message = api.message(user, text, user_id=user)
    else:
        message = api.message(user, caption=text, user_id=user, photo=api.photo(image))
    calls = await telegram_send(world, message)
    return user, [call.params.get("text") or call.params.get("caption") or "" for call in calls]


async def discord_command(
    world: World, command: str, options: dict[str, Any], image: bytes | None = None, user_id: str | None = None
) -> tuple[str, list[str]]:
    """Run a slash command as ``user_id`` (default: a new user) until its answer; (user id, every
    text of that answer)."""
    fake, number = world.discord, next(world.ids)
    user_id = user_id or str(1_500_000_000_000_000_000 + number)
    user = {**fake.user, "id": user_id, "username": f"user{number}", "global_name": f"User {number}"}
    attachments = {"image": fake.add_attachment("hero.png", image, "image/png")} if image is not None else {}
    d = await fake.slash(command, options, attachments=attachments, user=user)
    async with asyncio.timeout(30):  # a hang guard only: the fakes answer in milliseconds
        await fake.wait_for(lambda _call: bool(_answers(fake, d)))
    await world.runtime.senders["discord"].client.bridge.drain(5.0)  # type: ignore[attr-defined]
    return user_id, [_content(call) for call in _answers(fake, d)]


async def run_command(
    world: World,
    platform: str,
    command: str,
    options: dict[str, str],
    image: bytes | None = None,
    as_user: str | None = None,
) -> tuple[str, list[str]]:
    """``command`` with ``options`` on ``platform`` as ``as_user`` (a user key; default: a new user);
    (the user's key, the texts of the answer)."""
    known = as_user.partition(":")[2] if as_user else None
    if platform == "discord":
        user_id, texts = await discord_command(world, command, options, image, user_id=known)
        return f"discord:{user_id}", texts
    rest = next((opt.name for opt in world.runtime.core.commands.get(command).options if opt.rest), None)  # type: ignore[union-attr]
    words = [options[rest]] if rest in options else []
    words += [f'{name}="{value}"' for name, value in options.items() if name != rest]
    user, texts = await telegram_command(
        world, f"/{command} {' '.join(words)}", image, user=int(known) if known else None
    )
    return f"telegram:{user}", texts


def confirmation_code(texts: list[str]) -> str | None:
    """The code of a cost question among ``texts`` (None when the command did not ask)."""
    found = (re.search(r"/confirm (\w+)", text) for text in texts)
    return next((match.group(1) for match in found if match), None)


@pytest.mark.parametrize("platform", ["telegram", "discord"])
@pytest.mark.parametrize(("command", "option"), paid_text_options())
async def test_control_characters_in_a_text_option_are_cleaned_before_the_paid_call(
    world: World, platform: str, command: str, option: str
) -> None:
    declared = world.runtime.core.commands.get(command)
    assert declared is not None
    options = {opt.name: "a dragon learns to fly" for opt in declared.options if opt.required and opt.rest}
    options.update({"video": {"duration": "4"}, "longstory": {"segments": "6"}}.get(command, {}))
    options[option], clean = dirty(platform)
    text_from, media_from = len(world.text.requests), len(world.media.requests)
    user_key, texts = await run_command(
        world, platform, command, options, png_bytes() if command == "character" else None
    )
    code = confirmation_code(texts)
    if code is not None:  # a clip costs over $1: the user goes ahead with the cost question
        assert len(world.media.requests) == media_from, "a paid call before the cost question was answered"
        _, texts = await run_command(world, platform, "confirm", {"code": code}, as_user=user_key)
    assert texts and not any(CRASHED.search(text) for text in texts), texts
    sent = upstream_strings(world, text_from, media_from)
    assert sent, "the cleaned input never reached the paid call"
    assert all(storable(text) == text for text in sent), [text for text in sent if storable(text) != text]
    assert any(clean in text for text in sent), "the text (with its ZWJ and ZWNJ) did not reach the model"


@pytest.mark.parametrize("platform", ["telegram", "discord"])
async def test_a_character_name_with_control_characters_is_stored_clean(world: World, platform: str) -> None:
    name, clean = dirty(platform)
    user_key, texts = await run_command(world, platform, "character", {"name": name}, png_bytes())
    assert any(text.startswith(f"🧑\u200d🎨 {clean}") for text in texts), texts
    async with sessions()() as session:
        names = list(await session.scalars(select(CharacterRecord.name).where(CharacterRecord.user_key == user_key)))
    assert names == [clean]


@pytest.mark.parametrize("platform", ["telegram", "discord"])
async def test_a_character_profile_from_the_model_is_stored_without_control_characters(
    world: World, platform: str
) -> None:
    fields = ("summary", "appearance", "personality", "art_style", "visual_description")
    profile = {"name": "Cap\u0000tain\u001b", **{name: f"{name}\u0000 with a NUL\ufffe" for name in fields}}
    world.text.inject(Fault.content(json.dumps(profile)), route="chat")
    user_key, texts = await run_command(world, platform, "character", {}, png_bytes())
    assert any(text.startswith("🧑\u200d🎨 Captain") for text in texts), texts
    async with sessions()() as session:
        record = (await session.scalars(select(CharacterRecord).where(CharacterRecord.user_key == user_key))).one()
    stored = json.loads(record.profile)
    assert (record.name, stored["name"], stored["summary"]) == ("Captain", "Captain", "summary with a NUL")


@pytest.mark.parametrize("platform", ["telegram", "discord"])
async def test_a_schedule_niche_with_control_characters_is_stored_clean(world: World, platform: str) -> None:
    niche, clean = dirty(platform)
    request = f"add {niche} 09:30 Europe/Berlin"
    if platform == "telegram":
        _, texts = await telegram_command(world, f"/schedule {request}")
    else:
        fake = world.discord
        user = {**fake.user, "id": DISCORD_ADMIN_ID}
        d = await fake.slash("schedule", {"request": request}, user=user)
        texts = [await discord_answer(fake, d)]
    assert any(f"· {clean} ·" in text for text in texts), texts
    assert world.runtime.schedules is not None
    stored = [view for view in await world.runtime.schedules.all() if view.niche == clean]
    assert len(stored) == 1
    await world.runtime.schedules.remove(stored[0].platform, stored[0].chat_id, stored[0].id)
