"""/video, /thumbnail and /jobs through the chat core with durable jobs (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.catalog import build_commands
from bot.core.dispatcher import ChatCore
from bot.core.jobs import JobCommands
from services.character import CharacterProfile
from services.characters import DatabaseCharacterBook
from services.jobs import JobOutcome, JobService
from services.queue import JobExecutor, JobQueue
from services.store.models import JobState
from tests.bot.helpers import RecordingResponder, invocation
from tests.fakes import FakeGenAI, FakeOpenRouter

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
    core = ChatCore(build_commands(characters=DatabaseCharacterBook(), jobs=JobCommands(jobs, queue, executor)))
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


async def test_characters_persist_in_the_database(setup: tuple[ChatCore, JobService], upstreams: Upstreams) -> None:
    book = DatabaseCharacterBook()
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
