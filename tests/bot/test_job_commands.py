"""/video, /thumbnail and /jobs through the chat core with durable jobs (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.core.catalog import build_commands
from bot.core.dispatcher import ChatCore
from bot.core.jobs import JobCommands
from bot.core.senders import ChatSenders
from connectors.database import sessions
from services.characters import CharacterProfile, DatabaseCharacterBook
from services.config import configure_services
from services.jobs import JobLate, JobOutcome, JobService
from services.ledger import UsageLedger
from services.pricing import PriceTable
from services.queue import JobExecutor, JobQueue
from services.store.models import JobState, UsageRecord
from tests.bot.helpers import RecordingResponder, invocation, png_bytes, uploaded
from tests.conftest import TEST_SERVICE_CONFIG
from tests.fakes import FakeGenAI, FakeOpenRouter
from tests.services.test_jobs import wait_until

Upstreams = tuple[FakeOpenRouter, FakeGenAI]


@pytest.fixture
async def setup(tmp_path: Path, database: str, upstreams: Upstreams) -> AsyncIterator[tuple[ChatCore, JobService]]:
    delivered_later: list[JobOutcome] = []

    async def deliver(outcome: JobOutcome) -> None:
        delivered_later.append(outcome)

    jobs = JobService(tmp_path / "media")
    executor = JobExecutor(jobs, deliver)
    queue = JobQueue(executor)
    await queue.start()
    core = ChatCore(
        build_commands(
            characters=DatabaseCharacterBook(tmp_path / "media"),
            jobs=JobCommands(jobs, queue, executor, ChatSenders().post),
        )
    )
    yield core, jobs
    await queue.stop()
    assert delivered_later == []  # interactive commands deliver their own results


async def test_video_runs_as_a_job_with_progress_and_is_marked_delivered(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams
) -> None:
    core, jobs = setup
    _, veo = upstreams
    veo.polls_until_done = 2
    responder = RecordingResponder()
    reply = await core.handle(invocation("video", "a cat surfing duration=4"), responder)
    assert not reply.is_error, reply.text
    assert reply.media[0].kind == "video" and reply.media[0].data[4:8] == b"ftyp"
    assert any("Video job" in line for line in responder.progress)
    [view] = await jobs.list_jobs("test:42")
    assert view.state == JobState.DELIVERED
    assert len(veo.video_generation_requests) == 1


async def test_failed_job_is_one_error_reply_and_jobs_shows_it_failed(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams
) -> None:
    core, jobs = setup
    _, veo = upstreams
    veo.video_outcome = "filtered"
    responder = RecordingResponder()
    reply = await core.handle(invocation("video", "something"), responder)
    assert reply.is_error and "safety filter" in reply.text
    assert len(responder.delivered) == 1
    [view] = await jobs.list_jobs("test:42")
    assert view.state == JobState.FAILED and view.error
    assert view.delivered_at is not None  # the error message was posted: not retried
    assert await jobs.unfinished_job_ids(include_leased=True) == []
    listing = await core.handle(invocation("jobs", ""), responder)
    assert "· failed ·" in listing.text and "delivered" not in listing.text


async def test_undelivered_result_stays_for_a_later_delivery(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams
) -> None:
    core, jobs = setup
    responder = RecordingResponder(fail_deliveries=1)
    await core.handle(invocation("thumbnail", "My Dragon"), responder)
    [view] = await jobs.list_jobs("test:42")
    assert view.state == JobState.SUCCEEDED  # not marked delivered: the sweeper will deliver it
    assert await jobs.unfinished_job_ids(include_leased=True) == [view.id]


async def test_jobs_command_lists_resends_and_cancels(setup: tuple[ChatCore, JobService], upstreams: Upstreams) -> None:
    core, jobs = setup
    responder = RecordingResponder()
    await core.handle(invocation("thumbnail", "My Dragon"), responder)
    listing = await core.handle(invocation("jobs", ""), responder)
    assert "My Dragon" in listing.text and "delivered" in listing.text
    [view] = await jobs.list_jobs("test:42")
    resent = await core.handle(invocation("jobs", f"resend {view.id[:8]}"), responder)
    assert resent.media and resent.media[0].data.startswith(b"\x89PNG")
    refused = await core.handle(invocation("jobs", f"cancel {view.id[:8]}"), responder)
    assert refused.is_error and "only a queued job" in refused.text
    unknown = await core.handle(invocation("jobs", "cancel zzzzzzzz"), responder)
    assert unknown.is_error and "no job" in unknown.text
    empty_user = await core.handle(invocation("jobs", "explode"), responder)
    assert empty_user.is_error


async def test_characters_persist_in_the_database(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams, tmp_path: Path
) -> None:
    book = DatabaseCharacterBook(tmp_path / "media")
    hero = CharacterProfile(
        name="Captain", summary="s", appearance="a", personality="p", art_style="3D", visual_description="blue hat"
    )
    await book.remember("test:42", hero)
    await book.remember("test:42", hero.model_copy(update={"visual_description": "red hat"}))
    assert await book.names("test:42") == ["Captain"]
    found = await book.find("test:42", "captain")
    assert found is not None and found.visual_description == "red hat"
    assert (await book.find("test:42", "last")) == found
    assert await book.find("test:other", "captain") is None
    core, _ = setup
    text, _ = upstreams
    reply = await core.handle(invocation("story", "a heist character=Captain segments=2"), RecordingResponder())
    assert not reply.is_error
    assert "red hat" in text.chat_requests[-1].json["messages"][-1]["content"]


async def test_a_character_copied_with_control_characters_is_stored_clean(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams, tmp_path: Path
) -> None:
    book = DatabaseCharacterBook(tmp_path / "media")
    hero = CharacterProfile(
        name="Hero", summary="s", appearance="a", personality="p", art_style="3D", visual_description="blue hat"
    )
    # model_copy skips validation: the store itself must not take text it cannot hold.
    await book.remember("test:43", hero.model_copy(update={"name": "Cap\x00tain 👩\u200d🚀", "summary": "s\x00\ud800"}))
    found = await book.find("test:43", "captain 👩\u200d🚀")
    assert found is not None and (found.name, found.summary) == ("Captain 👩\u200d🚀", "s")


async def test_video_with_a_character_starts_from_its_image(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams
) -> None:
    core, _ = setup
    _, veo = upstreams
    hero = png_bytes(40, 30)
    analysed = await core.handle(invocation("character", "Captain", image=uploaded(hero)), RecordingResponder())
    assert not analysed.is_error, analysed.text
    reply = await core.handle(invocation("video", "sailing at dawn duration=4 character=captain"), RecordingResponder())
    assert not reply.is_error, reply.text
    instance = veo.video_generation_requests[-1].json["instances"][0]
    assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == hero
    assert instance["image"]["mimeType"] == "image/png"
    assert "Captain" in instance["prompt"]

    upload = png_bytes(24, 24)  # an image sent with /video is the first frame, not the character's
    reply = await core.handle(
        invocation("video", "waving duration=4 character=Captain", image=uploaded(upload)), RecordingResponder()
    )
    assert not reply.is_error, reply.text
    instance = veo.video_generation_requests[-1].json["instances"][0]
    assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == upload

    reply = await core.handle(invocation("video", "an empty beach duration=4"), RecordingResponder())
    assert "image" not in veo.video_generation_requests[-1].json["instances"][0]


async def test_thumbnail_with_a_character_sends_its_image_as_the_reference(
    setup: tuple[ChatCore, JobService], upstreams: Upstreams
) -> None:
    core, _ = setup
    _, genai = upstreams
    hero = png_bytes(40, 30)
    await core.handle(invocation("character", "Captain", image=uploaded(hero)), RecordingResponder())
    reply = await core.handle(invocation("thumbnail", "My Voyage character=Captain"), RecordingResponder())
    assert not reply.is_error, reply.text
    parts = genai.requests_on("generateContent")[-1].json["contents"][0]["parts"]
    sent = [part.get("inlineData") or part.get("inline_data") for part in parts]
    assert [base64.urlsafe_b64decode(inline["data"]) for inline in sent if inline] == [hero]  # the SDK's alphabet


async def test_a_video_past_the_deadline_is_answered_late_then_delivered_once_and_paid_once(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    veo.video_seconds = 1.0  # Veo takes longer than the deadline below
    configure_services(dataclasses.replace(TEST_SERVICE_CONFIG, video_deadline_seconds=0.2))
    delivered: list[JobOutcome] = []
    told_late: list[JobLate] = []
    done = asyncio.Event()

    async def deliver(outcome: JobOutcome) -> None:  # what Runtime.deliver_outcome does: the ChatSender
        delivered.append(outcome)
        done.set()

    async def notify_late(notice: JobLate) -> None:
        told_late.append(notice)

    ledger = UsageLedger(PriceTable(""))
    jobs = JobService(tmp_path / "media", ledger=ledger)
    executor = JobExecutor(jobs, deliver, notify_late)
    queue = JobQueue(executor)
    await queue.start()
    core = ChatCore(build_commands(jobs=JobCommands(jobs, queue, executor, ChatSenders().post)))
    try:
        reply = await core.handle(invocation("video", "a slow sunrise duration=4"), RecordingResponder())
        assert not reply.is_error, reply.text
        assert "taking longer than usual" in reply.text and "posted here" in reply.text and not reply.media
        [view] = await jobs.list_jobs("test:42")
        assert view.state == JobState.RUNNING  # still polled, not abandoned
        await asyncio.wait_for(done.wait(), timeout=30)
        await wait_until(lambda: _delivered(jobs, view.id), "the delivery mark")
    finally:
        await queue.stop()
    [outcome] = delivered
    assert outcome.ok and outcome.job_id == view.id and outcome.media_path is not None
    assert outcome.media_path.read_bytes()[4:8] == b"ftyp"
    assert told_late == []  # the command already said so
    assert (await jobs.list_jobs("test:42"))[0].cost is not None
    assert len(veo.video_generation_requests) == 1
    await ledger.flush()
    async with sessions()() as session:
        assert await session.scalar(select(func.count()).select_from(UsageRecord)) == 1


async def test_with_a_shared_queue_the_command_leaves_the_job_free_for_any_worker(
    tmp_path: Path, database: str, upstreams: Upstreams, redis_url: str
) -> None:
    name = f"reelwright:test:{uuid.uuid4().hex}"
    delivered: list[str] = []
    done = asyncio.Event()

    async def deliver(outcome: JobOutcome) -> None:
        delivered.append(outcome.job_id)
        done.set()

    async def bot_never_delivers(outcome: JobOutcome) -> None:
        raise AssertionError("the bot process runs no jobs with a shared queue")

    bot_jobs = JobService(tmp_path / "media", owner="host:run")
    bot_executor = JobExecutor(bot_jobs, bot_never_delivers)
    bot_queue = JobQueue(bot_executor, redis_url, queue_name=name)
    worker_queue = JobQueue(
        JobExecutor(JobService(tmp_path / "media", owner="host:worker"), deliver), redis_url, queue_name=name
    )
    await bot_queue.start()
    await worker_queue.start()
    worker = asyncio.create_task(worker_queue.run_worker())
    core = ChatCore(build_commands(jobs=JobCommands(bot_jobs, bot_queue, bot_executor, ChatSenders().post)))
    try:
        reply = await core.handle(invocation("thumbnail", "My Dragon"), RecordingResponder())
        assert "queued" in reply.text
        [view] = await bot_jobs.list_jobs("test:42")
        job = await bot_jobs.get(view.id)
        assert job is not None and job.lease_owner != "host:run"  # no 90 s wait for the bot's lease
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await worker_queue.stop()
        await bot_queue.stop()
    assert delivered == [view.id]


async def _delivered(jobs: JobService, job_id: str) -> bool:
    job = await jobs.get(job_id)
    return job is not None and job.state == JobState.DELIVERED
