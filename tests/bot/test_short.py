"""/short on the production runtime (start_runtime) against the AI fakes, with real FFmpeg (PyAV) on
the fakes' real clips: one idea in, one finished short out, every clip paid once."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import av
import pytest
from sqlalchemy import select, update

from bot.core.context import ChatRef, Invocation, UserRef
from bot.core.replies import Media, Reply
from connectors.database import sessions
from services.budgets import LocalBudgets
from services.jobs import JobAddress
from services.shorts import ShortPayload
from services.store.models import JobRecord, UsageRecord
from services.story import Story
from services.usage import Usage
from tests.bot.helpers import RecordingResponder, png_bytes, uploaded
from tests.conftest import RuntimeFactory
from tests.fakes import FakeGenAI, Fault

SMALL = {
    "short_long_side": 256,
    "confirm_above_usd": 0,
    "rate_limit": "1000/minute",
    "budget_user_daily_usd": 100.0,
    "budget_chat_daily_usd": 100.0,
}


@pytest.fixture
def make_runtime(make_runtime: RuntimeFactory) -> RuntimeFactory:
    """Production runtimes on the AI fakes, small shorts (fast to encode), no confirmation."""

    async def make(**overrides: Any) -> Any:
        return await make_runtime(**{**SMALL, **overrides})

    return make


class RecordingSender:
    """Stands in for a platform's sender: what the bot posts to a chat outside a command's answer."""

    def __init__(self) -> None:
        self.sent: list[tuple[ChatRef, Reply]] = []

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        self.sent.append((chat, reply))


def short(text: str, *, platform: str = "telegram", user: str = "7", upload_limit: int | None = None) -> Invocation:
    return Invocation(
        command="short",
        user=UserRef(platform=platform, id=user, name="u"),
        chat=ChatRef(platform=platform, id="-100", is_private=False),
        text=text,
        upload_limit=upload_limit,
    )


def jobs_command(text: str, *, platform: str = "telegram", user: str = "7") -> Invocation:
    return Invocation(
        command="jobs",
        user=UserRef(platform=platform, id=user, name="u"),
        chat=ChatRef(platform=platform, id="-100", is_private=False),
        text=text,
    )


def media_of(reply: Reply, kind: str) -> list[Media]:
    return [media for media in reply.media if media.kind == kind]


def probe(data: bytes) -> tuple[float, int, int, int, int, float]:
    """Duration, width, height, video and audio stream counts, and the audio's duration."""
    with av.open(io.BytesIO(data), "r") as container:
        video = container.streams.video
        audio = container.streams.audio
        duration = float(container.duration or 0) / av.time_base
        sound = audio[0] if audio else None
        audio_seconds = float(sound.duration * sound.time_base) if sound and sound.duration and sound.time_base else 0.0
        return duration, video[0].width, video[0].height, len(video), len(audio), audio_seconds


async def held(runtime: Any) -> Decimal:
    """What the user's budget still holds for unfinished work."""
    budgets = runtime.jobs.budgets
    assert isinstance(budgets, LocalBudgets)
    return budgets.held("user", "telegram:7")


async def rows(kind: str) -> list[JobRecord]:
    async with sessions()() as session:
        return list(await session.scalars(select(JobRecord).where(JobRecord.kind == kind)))


async def eventually(check: Callable[[list[JobRecord]], bool], *, rows_of: str, seconds: float = 60.0) -> None:
    """Until ``check`` holds for the rows of the jobs of kind ``rows_of``: bounded polling of state
    that other tasks change."""
    for _ in range(int(seconds / 0.05)):
        if check(await rows(rows_of)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting on the {rows_of} rows")


async def usage_commands() -> list[str]:
    async with sessions()() as session:
        return list(await session.scalars(select(UsageRecord.command)))


async def test_one_idea_becomes_a_finished_captioned_short(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime()
    sender = runtime.senders["telegram"] = RecordingSender()
    responder = RecordingResponder()
    reply = await runtime.core.handle(short("a lighthouse keeper befriends a storm segments=3"), responder)

    assert not reply.is_error, reply.text
    [video] = media_of(reply, "video")
    duration, width, height, video_streams, audio_streams, audio_seconds = probe(video.data)
    [clip_rows] = [await rows("clip")]
    clip_seconds = 0
    for clip in clip_rows:
        assert clip.state == "delivered"
        clip_seconds += int(json.loads(clip.payload)["duration_seconds"])
    assert len(clip_rows) == 3
    assert abs(duration - clip_seconds) <= 0.1
    assert width < height  # 9:16
    assert (video_streams, audio_streams) == (1, 1)
    assert abs(audio_seconds - duration) <= 0.15
    assert len(fake_genai.video_generation_requests) == 3
    [srt] = [media for media in reply.media if media.filename.endswith(".srt")]
    assert srt.data.decode().count(" --> ") == 3
    assert media_of(reply, "image"), "the thumbnail goes with the short"
    assert "#" in reply.text, "the copy's hashtags are in the answer"
    assert any("Clips 3/3" in line for line in responder.progress) or any(
        "Stitching" in line for line in responder.progress
    )
    [parent] = await rows("short")
    assert parent.state == "delivered"
    [(chat, story_post), (_, sheet_post)] = sender.sent
    assert chat.id == "-100" and isinstance(story_post.result, Story), "the story is shown while the clips render"
    [sheet] = sheet_post.media
    assert sheet.filename == "clips.jpg" and sheet.data.startswith(b"\xff\xd8"), "then each clip's first frame"
    assert "clips.jpg" not in [media.filename for media in reply.media], "the sheet is not posted twice"
    resent = await runtime.core.handle(jobs_command(f"resend {parent.id[:8]}"), RecordingResponder())
    assert [media.filename for media in resent.media] == ["short.mp4", "thumbnail.png", "clips.jpg", "short.srt"]
    await runtime.ledger.flush()
    assert set(await usage_commands()) == {"short"}
    assert await held(runtime) == 0, "the short's reservation is settled"
    spent = await runtime.ledger.spent("user", "telegram:7")
    assert spent.today == await runtime.jobs.short_spent(parent.id) > 0
    listing = await runtime.core.handle(jobs_command(""), RecordingResponder())
    assert "short" in listing.text and listing.text.count("clip ") == 3


async def test_a_clip_filtered_once_is_made_again_and_paid_once(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_outcomes_for["visual prompt 2:"] = ["filtered"]
    runtime = await make_runtime()
    reply = await runtime.core.handle(
        short("a robot learns to paint segments=3 voice=none captions=off"), RecordingResponder()
    )

    assert not reply.is_error, reply.text
    assert len(fake_genai.video_generation_requests) == 4
    await runtime.ledger.flush()
    async with sessions()() as session:
        video_usage = list(await session.scalars(select(UsageRecord).where(UsageRecord.video_seconds > 0)))
    assert len(video_usage) == 3, "only the three clips that were made are paid for"


async def test_a_clip_that_fails_twice_fails_the_short_and_retry_pays_only_for_it(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_outcomes_for["visual prompt 2:"] = ["filtered", "error"]
    runtime = await make_runtime()
    reply = await runtime.core.handle(short("a robot learns to paint segments=3"), RecordingResponder())

    assert reply.is_error
    assert "segment 2" in reply.text and "/jobs retry" in reply.text
    assert await held(runtime) == 0, "a failed short holds no budget"
    assert len(fake_genai.video_generation_requests) == 4
    [parent] = await rows("short")
    listing = await runtime.core.handle(jobs_command(""), RecordingResponder())
    assert "failed" in listing.text and f"/jobs retry {parent.id[:8]}" in listing.text

    retried = await runtime.core.handle(jobs_command(f"retry {parent.id[:8]}"), RecordingResponder())
    assert not retried.is_error, retried.text
    assert media_of(retried, "video")
    assert len(fake_genai.video_generation_requests) == 5, "the retry made only the missing clip"
    assert await held(runtime) == 0
    await runtime.ledger.flush()
    async with sessions()() as session:
        video_usage = list(await session.scalars(select(UsageRecord).where(UsageRecord.video_seconds > 0)))
    assert len(video_usage) == 3


async def test_a_short_over_the_budget_is_refused_before_any_call(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    runtime = await make_runtime(budget_user_daily_usd=5.0)
    reply = await runtime.core.handle(short("a lighthouse keeper segments=3"), RecordingResponder())

    assert reply.is_error and "budget" in reply.text
    assert fake_genai.video_generation_requests == []
    assert await rows("short") == []


async def test_bad_options_are_refused_before_any_job(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime()
    for text, expected in (
        ("an idea segments=2", "segments"),
        ("an idea segments=9", "segments"),
        ("an idea voice=K0re!", "voice"),
        ("an idea captions=maybe", "captions"),
        ("an idea character=nobody", "character"),
        ("segments=3", "idea"),
    ):
        reply = await runtime.core.handle(short(text), RecordingResponder())
        assert reply.is_error and expected in reply.text.lower(), (text, reply.text)
    tiny = await runtime.core.handle(short("an idea segments=8", upload_limit=200_000), RecordingResponder())
    assert tiny.is_error and "fewer segments" in tiny.text
    assert await rows("short") == []
    assert fake_genai.requests == []


async def test_the_short_fits_the_platforms_upload_limit(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(short_long_side=640)
    limit = 1_500_000
    reply = await runtime.core.handle(short("a storm at sea segments=3", upload_limit=limit), RecordingResponder())

    assert not reply.is_error, reply.text
    [video] = media_of(reply, "video")
    assert len(video.data) <= limit


async def test_a_failed_narration_fails_the_short_and_retry_keeps_every_clip(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    runtime = await make_runtime(media_max_retries=1)
    fake_genai.inject(*(Fault.status(400, "voice refused") for _ in range(3)), route="generateContent")
    reply = await runtime.core.handle(short("a robot learns to paint segments=3"), RecordingResponder())

    assert reply.is_error and "narration" in reply.text and "/jobs retry" in reply.text, reply.text
    assert len(fake_genai.video_generation_requests) == 3
    [parent] = await rows("short")
    retried = await runtime.core.handle(jobs_command(f"retry {parent.id[:8]}"), RecordingResponder())
    assert not retried.is_error, retried.text
    assert len(fake_genai.video_generation_requests) == 3, "no clip is made or paid for again"
    assert await held(runtime) == 0


async def test_one_user_two_shorts_at_once_with_budget_for_one(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_seconds = 0.3
    runtime = await make_runtime(budget_user_daily_usd=15.0)
    replies = await asyncio.gather(
        *(runtime.core.handle(short(f"a storm {i} segments=3"), RecordingResponder()) for i in range(2))
    )

    refused = [reply for reply in replies if reply.is_error]
    assert len(refused) == 1 and "budget" in refused[0].text
    assert len(fake_genai.video_generation_requests) == 3
    assert await held(runtime) == 0


async def test_many_users_make_shorts_at_once(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime()
    replies = await asyncio.gather(
        *(runtime.core.handle(short(f"a storm {i} segments=3", user=str(i)), RecordingResponder()) for i in range(4))
    )

    assert [reply.is_error for reply in replies] == [False] * 4
    assert all(media_of(reply, "video") for reply in replies)
    assert len(fake_genai.video_generation_requests) == 12
    assert {parent.state for parent in await rows("short")} == {"delivered"}


async def test_a_short_past_retention_is_removed_whole_and_cannot_be_retried(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_outcomes_for["visual prompt 1:"] = ["error", "error"]
    runtime = await make_runtime()
    failed = await runtime.core.handle(short("a robot learns to paint segments=3"), RecordingResponder())
    assert failed.is_error
    [parent] = await rows("short")
    work = runtime.settings.media_dir / "shorts" / parent.id
    assert (work / "story.json").is_file()

    assert await runtime.jobs.purge_media(timedelta(seconds=-1)) >= 1
    assert not work.exists()
    retried = await runtime.core.handle(jobs_command(f"retry {parent.id[:8]}"), RecordingResponder())
    assert retried.is_error and "cleaned up" in retried.text
    assert len(fake_genai.video_generation_requests) == 4


async def test_a_character_is_in_every_clip_and_every_clip_starts_from_its_image(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    runtime = await make_runtime()
    hero = png_bytes(40, 30)
    analysed = await runtime.core.handle(
        Invocation(**{**short("Captain").__dict__, "command": "character", "image": uploaded(hero)}),
        RecordingResponder(),
    )
    assert not analysed.is_error, analysed.text
    reply = await runtime.core.handle(short("a voyage segments=3 character=captain"), RecordingResponder())

    assert not reply.is_error, reply.text
    instances = [request.json["instances"][0] for request in fake_genai.video_generation_requests]
    assert len(instances) == 3
    for instance in instances:
        assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == hero
        assert "Captain" in instance["prompt"]
    thumbnail_parts = [
        part
        for request in fake_genai.requests_on("generateContent")
        if "IMAGE" in json.dumps(request.json.get("generationConfig", {}))
        for part in request.json["contents"][0]["parts"]
    ]
    references = [part.get("inlineData") or part.get("inline_data") for part in thumbnail_parts]
    assert [base64.urlsafe_b64decode(inline["data"]) for inline in references if inline] == [hero]


async def test_the_shorts_thumbnail_is_paid_for_with_the_short(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime()
    runtime.senders["telegram"] = RecordingSender()
    reply = await runtime.core.handle(short("a robot learns to paint segments=3 voice=none"), RecordingResponder())

    assert not reply.is_error, reply.text
    assert media_of(reply, "image"), "a thumbnail was made"
    await runtime.ledger.flush()
    async with sessions()() as session:
        images = list(await session.scalars(select(UsageRecord).where(UsageRecord.images > 0)))
    [thumbnail] = images
    assert thumbnail.command == "short" and thumbnail.cost > 0
    [parent] = await rows("short")
    assert parent.cost is not None and parent.cost >= thumbnail.cost, "the short's cost includes its thumbnail"


async def test_without_captions_or_a_voice_the_clips_are_joined_as_they_are(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    runtime = await make_runtime()
    reply = await runtime.core.handle(short("a storm segments=3 captions=off voice=none"), RecordingResponder())

    assert not reply.is_error, reply.text
    [video] = media_of(reply, "video")
    _, width, height, video_streams, audio_streams, _ = probe(video.data)
    assert (width, height) == (160, 284), "stream-copied: the clips' own size, not re-encoded to 256 px"
    assert (video_streams, audio_streams) == (1, 1)
    [parent] = await rows("short")
    assert list((runtime.settings.media_dir / "shorts" / parent.id).glob("piece-*.mp4")) == []


async def test_a_retry_reserves_the_missing_clip_and_the_shorts_own_steps(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_outcomes_for["visual prompt 2:"] = ["error", "error"]
    runtime = await make_runtime()
    failed = await runtime.core.handle(short("a robot learns to paint segments=3"), RecordingResponder())
    assert failed.is_error
    [parent] = await rows("short")
    [missing] = [clip for clip in await rows("clip") if clip.state == "failed"]
    seconds = json.loads(missing.payload)["duration_seconds"]

    _, estimate = await runtime.jobs.retry("telegram:7", parent.id[:8])
    clip_cost = runtime.ledger.cost(runtime.settings.video_model, Usage(video_seconds=seconds))
    assert clip_cost < estimate < clip_cost + Decimal("0.25"), (estimate, clip_cost)
    assert await held(runtime) == estimate
    again = await runtime.core.handle(jobs_command(f"retry {parent.id[:8]}"), RecordingResponder())
    assert again.is_error and "queued" in again.text, "one retry at a time"


async def test_a_shutdown_mid_short_leaves_it_to_the_next_start_which_finishes_it(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_seconds = 1.0
    first = await make_runtime()
    command = asyncio.create_task(first.core.handle(short("a storm at sea segments=3"), RecordingResponder()))
    await eventually(lambda clips: any(clip.state == "running" for clip in clips), rows_of="clip")
    await first.executor.stop()  # what Runtime.close does first
    [parent] = await rows("short")
    assert parent.state == "running" and parent.error is None, "stopped where it was, not failed"
    command.cancel()
    await asyncio.gather(command, return_exceptions=True)
    await first.close()

    second = await make_runtime()
    sender = second.senders["telegram"] = RecordingSender()
    await second.sweeper.sweep()
    await eventually(lambda shorts: shorts[0].state == "delivered", rows_of="short")
    [(_, delivered)] = [(chat, reply) for chat, reply in sender.sent if reply.media]
    assert delivered.media[0].filename == "short.mp4"
    assert len(fake_genai.video_generation_requests) == 3, "the clips were resumed, not made again"


async def test_a_short_another_process_took_over_is_left_alone(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_seconds = 2.0
    runtime = await make_runtime(job_lease_seconds=2)
    payload = ShortPayload(idea="a storm", segments=3, byte_budget=50 << 20)
    address = JobAddress("telegram", "-100", "telegram:7", "telegram:-100")
    short_id = await runtime.jobs.create_short_job(address, payload)
    running = asyncio.create_task(runtime.jobs.run(short_id))
    await eventually(lambda clips: len(clips) == 3, rows_of="clip")
    async with sessions().begin() as session:
        await session.execute(update(JobRecord).where(JobRecord.id == short_id).values(lease_owner="another-process"))

    async with asyncio.timeout(30):
        assert await running is None, "nothing to deliver from here"
    [parent] = await rows("short")
    assert (parent.state, parent.error, parent.lease_owner) == ("running", None, "another-process")


async def test_a_running_short_holds_only_what_it_has_not_spent_yet(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    """In one process spend recorded in the ledger counts already: the short's hold shrinks by each
    clip it pays for, so the user's budget is not counted twice while the short runs."""
    slow = "visual prompt 3:"
    fake_genai.render_seconds = lambda prompt: 3.0 if slow in prompt else 0.0  # type: ignore[method-assign]
    runtime = await make_runtime()
    command = asyncio.create_task(runtime.core.handle(short("a storm at sea segments=3"), RecordingResponder()))
    await eventually(lambda clips: sum(clip.state == "succeeded" for clip in clips) == 2, rows_of="clip")
    [parent] = await rows("short")
    payload = ShortPayload.model_validate_json(parent.payload)
    assert payload.reservation is not None
    spent = await runtime.jobs.short_spent(parent.id)
    assert spent > 0
    assert await held(runtime) == payload.reservation.amount - spent

    reply = await command
    assert not reply.is_error, reply.text
    assert await held(runtime) == 0


async def test_a_retry_the_budget_cannot_cover_is_refused_before_anything_is_queued(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    fake_genai.video_outcomes_for["visual prompt 2:"] = ["error", "error"]
    runtime = await make_runtime()
    failed = await runtime.core.handle(short("a robot learns to paint segments=3"), RecordingResponder())
    assert failed.is_error
    [parent] = await rows("short")
    await runtime.ledger.flush()
    spent = (await runtime.ledger.spent("user", "telegram:7")).today
    budgets = runtime.jobs.budgets
    budgets.limits = dataclasses.replace(budgets.limits, user_daily=spent + Decimal("0.50"))

    refused = await runtime.core.handle(jobs_command(f"retry {parent.id[:8]}"), RecordingResponder())
    assert refused.is_error
    assert f"Retrying short {parent.id[:8]} would cost about" in refused.text and "your daily budget" in refused.text
    assert len(fake_genai.video_generation_requests) == 4, "no clip was submitted"
    assert [short.state for short in await rows("short")] == ["failed"]
    assert await held(runtime) == 0
