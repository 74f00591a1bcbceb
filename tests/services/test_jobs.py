"""Durable jobs on SQLite and PostgreSQL against the fake Veo: written before the paid call,
resumed by operation name after a crash, delivered once, never paid twice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from connectors.database import sessions
from services.config import configure_services
from services.jobs import DAMAGED_PAYLOAD, INTERRUPTED_SUBMISSION, JobAddress, JobLate, JobOutcome, JobService
from services.ledger import UsageLedger
from services.pricing import PriceTable
from services.queue import JobExecutor, JobQueue
from services.shorts import ShortPayload, short_dir
from services.store.models import JobRecord, JobState, UsageRecord, utcnow
from services.story import Story, StorySegment
from services.thumbnail import ThumbnailRequest
from services.usage import Usage
from services.video import VideoRequest
from tests.bot.helpers import png_bytes
from tests.conftest import TEST_SERVICE_CONFIG
from tests.fakes import FakeGenAI, FakeOpenRouter

Upstreams = tuple[FakeOpenRouter, FakeGenAI]
ADDRESS = JobAddress(platform="telegram", chat_id="42", user_key="telegram:7")


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str, attempts: int = 500) -> None:
    """Poll a condition that has no event to await (state in another component), bounded."""
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def three_clip_story() -> Story:
    """A short's story of three 4 s segments, as the story service would return it."""
    return Story(
        title="A cat",
        idea="a cat",
        segments=[
            StorySegment(number=n, narration=f"line {n}", visual_prompt=f"shot {n}", duration_seconds=4)
            for n in (1, 2, 3)
        ],
    )


async def state_of(job_id: str) -> JobRecord:
    async with sessions()() as session:
        job = await session.get(JobRecord, job_id)
        assert job is not None
        return job


@pytest.fixture
def service(tmp_path: Path, database: str, upstreams: Upstreams) -> JobService:
    return JobService(tmp_path / "media", lease_seconds=30)


async def test_row_is_written_before_the_paid_call_and_the_operation_name_when_known(
    service: JobService, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    veo.latency = 0.3
    job_id = await service.create_video_job(ADDRESS, VideoRequest(prompt="a cat surfing", duration_seconds=4))
    assert (await state_of(job_id)).state == JobState.QUEUED
    assert veo.requests == []
    run = asyncio.create_task(service.run(job_id))

    async def submitting_while_in_flight() -> bool:
        return bool(veo.video_generation_requests) and (await state_of(job_id)).state == JobState.SUBMITTING

    await wait_until(submitting_while_in_flight, "the paid call to be in flight")
    outcome = await run
    assert outcome is not None and outcome.ok
    job = await state_of(job_id)
    assert job.state == JobState.SUCCEEDED
    assert job.operation_name and "operations/" in job.operation_name
    assert outcome.media_path is not None and outcome.media_path.read_bytes()[4:8] == b"ftyp"


async def test_a_crashed_job_resumes_polling_its_operation_without_paying_again(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    veo.polls_until_done = 1000  # keeps "rendering" until we let it finish
    first = JobService(tmp_path / "media", lease_seconds=0.3)
    job_id = await first.create_video_job(ADDRESS, VideoRequest(prompt="x", duration_seconds=4))
    crashed = asyncio.create_task(first.run(job_id))

    async def running() -> bool:
        return (await state_of(job_id)).state == JobState.RUNNING

    await wait_until(running, "the operation name to be stored")
    crashed.cancel()  # the process dies mid-poll
    with pytest.raises(asyncio.CancelledError):
        await crashed
    veo.polls_until_done = 1
    second = JobService(tmp_path / "media", lease_seconds=30)  # a new process: another lease owner

    async def lease_expired() -> bool:
        return await second.unfinished_job_ids() == [job_id]

    await wait_until(lease_expired, "the dead owner's lease to expire")
    outcome = await second.run(job_id)
    assert outcome is not None and outcome.ok
    assert len(veo.video_generation_requests) == 1


async def test_a_job_interrupted_while_submitting_is_failed_not_resubmitted(
    service: JobService, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    job_id = await service.create_video_job(ADDRESS, VideoRequest(prompt="x"))
    async with sessions().begin() as session:
        await session.execute(update(JobRecord).where(JobRecord.id == job_id).values(state=JobState.SUBMITTING))
    outcome = await service.run(job_id)
    assert outcome is not None and outcome.error == INTERRUPTED_SUBMISSION
    assert veo.video_generation_requests == []


async def stored_usage() -> list[tuple[str, str, int, int]]:
    """The usage table as the database has it (nothing flushed first)."""
    async with sessions()() as session:
        rows = await session.execute(
            select(UsageRecord.command, UsageRecord.model, UsageRecord.video_seconds, UsageRecord.images)
        )
        return sorted((str(c), str(m), int(v), int(i)) for c, m, v, i in rows)


async def test_a_paid_result_and_its_usage_are_stored_together(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    """A crash right after a job is made must not lose what it used: the usage row is written with
    the result, not left in the ledger's buffer for its next flush."""
    ledger = UsageLedger(PriceTable(""), flush_every=3600)
    service = JobService(tmp_path / "media", ledger=ledger, video_model="veo-3.0-fast-generate-001")
    video = await service.create_video_job(ADDRESS, VideoRequest(prompt="a cat surfing", duration_seconds=4))
    thumbnail = await service.create_thumbnail_job(ADDRESS, ThumbnailRequest(title="A cat surfs"))
    for job_id in (video, thumbnail):
        outcome = await service.run(job_id)
        assert outcome is not None and outcome.ok, outcome
    stored = await stored_usage()
    assert [(command, seconds, images) for command, _, seconds, images in stored] == [
        ("thumbnail", 0, 1),
        ("video", 4, 0),
    ]
    job = await state_of(video)
    assert job.cost == ledger.cost("veo-3.0-fast-generate-001", Usage(video_seconds=4)) > 0
    assert await ledger.flush() == 0, "nothing was left to flush"
    assert ledger.current("user", ADDRESS.user_key).today == job.cost + (await state_of(thumbnail)).cost


async def test_a_paid_video_that_cannot_be_kept_is_still_accounted(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    ledger = UsageLedger(PriceTable(""), flush_every=3600)
    service = JobService(tmp_path / "media", ledger=ledger)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "results").write_text("not a folder")  # the result cannot be written
    job_id = await service.create_video_job(ADDRESS, VideoRequest(prompt="a cat surfing", duration_seconds=4))
    outcome = await service.run(job_id)
    assert outcome is not None and not outcome.ok
    await ledger.flush()
    assert [(command, seconds) for command, _, seconds, _ in await stored_usage()] == [("video", 4)]


async def test_a_shorts_own_paid_steps_are_stored_with_its_cost(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    ledger = UsageLedger(PriceTable(""), flush_every=3600)
    service = JobService(tmp_path / "media", ledger=ledger)
    short_id = await service.create_short_job(ADDRESS, ShortPayload(idea="a cat", segments=3, byte_budget=50 << 20))
    short = await state_of(short_id)
    await service.record_short_usage(short, [("gemini-2.5-flash", Usage(prompt_tokens=1000, completion_tokens=500))])
    assert await stored_usage() == [("short", "gemini-2.5-flash", 0, 0)]
    assert (await state_of(short_id)).cost == ledger.current("user", ADDRESS.user_key).today > 0


async def test_a_shorts_clip_interrupted_while_submitting_is_not_made_again(
    service: JobService, upstreams: Upstreams
) -> None:
    """A short does not make such a clip once more on its own: the first submission may have been
    billed. The short fails, and /jobs retry (the creator's choice, reserved first) makes it."""
    _, veo = upstreams
    payload = ShortPayload(idea="a cat", segments=3, byte_budget=50 << 20, captions=False)
    short_id = await service.create_short_job(ADDRESS, payload)
    story = three_clip_story()
    work = short_dir(service.media_dir, short_id)
    work.mkdir(parents=True, exist_ok=True)
    (work / "story.json").write_text(story.model_dump_json(), encoding="utf-8")
    clip_ids = await service.clip_jobs(await state_of(short_id), payload, story)
    async with sessions().begin() as session:  # as a crash during clip 2's paid call leaves it
        await session.execute(update(JobRecord).where(JobRecord.id == clip_ids[1]).values(state=JobState.SUBMITTING))
    outcome = await service.run(short_id)
    assert outcome is not None and not outcome.ok
    assert "segment 2" in (outcome.error or "") and "not charged twice" in (outcome.error or "")
    submitted = [json.dumps(request.json) for request in veo.video_generation_requests]
    assert len(submitted) == 2 and not any("shot 2" in body for body in submitted)

    await service.retry(ADDRESS.user_key, short_id[:8])
    retried = await service.run(short_id)
    assert retried is not None and retried.ok, retried
    assert len(veo.video_generation_requests) == 3, "the retry made only clip 2"


async def test_a_corrupt_payload_fails_with_a_message_while_others_continue(
    service: JobService, upstreams: Upstreams
) -> None:
    broken = await service.create_video_job(ADDRESS, VideoRequest(prompt="x"))
    fine = await service.create_video_job(ADDRESS, VideoRequest(prompt="y"))
    async with sessions().begin() as session:
        await session.execute(update(JobRecord).where(JobRecord.id == broken).values(payload="{not json"))
    broken_outcome, fine_outcome = await asyncio.gather(service.run(broken), service.run(fine))
    assert broken_outcome is not None and broken_outcome.error == DAMAGED_PAYLOAD
    assert fine_outcome is not None and fine_outcome.ok


async def test_a_filtered_video_fails_with_the_safety_message(service: JobService, upstreams: Upstreams) -> None:
    _, veo = upstreams
    veo.video_outcome = "filtered"
    job_id = await service.create_video_job(ADDRESS, VideoRequest(prompt="x"))
    outcome = await service.run(job_id)
    assert outcome is not None and outcome.error is not None and "safety filter" in outcome.error
    assert (await state_of(job_id)).state == JobState.FAILED


async def test_bad_input_creates_no_job(service: JobService, upstreams: Upstreams) -> None:
    from connectors.errors import UserInputError

    with pytest.raises(UserInputError):
        await service.create_video_job(ADDRESS, VideoRequest(prompt="   "))
    with pytest.raises(UserInputError):
        await service.create_video_job(ADDRESS, VideoRequest(prompt="x", image=b"not an image"))
    assert await service.list_jobs(ADDRESS.user_key) == []


async def test_delivery_mark_is_idempotent(service: JobService, upstreams: Upstreams) -> None:
    job_id = await service.create_thumbnail_job(ADDRESS, ThumbnailRequest(title="My Dragon"))
    assert (await service.run(job_id)) is not None
    assert await service.mark_delivered(job_id) is True
    assert await service.mark_delivered(job_id) is False
    assert await service.run(job_id) is None  # nothing left to do
    assert await service.unfinished_job_ids(include_leased=True) == []


async def test_two_processes_on_one_job_pay_once_and_deliver_once(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    delivered: list[JobOutcome] = []

    async def deliver(outcome: JobOutcome) -> None:
        delivered.append(outcome)

    a = JobExecutor(JobService(tmp_path / "media", lease_seconds=30), deliver)
    b = JobExecutor(JobService(tmp_path / "media", lease_seconds=30), deliver)
    job_id = await a.jobs.create_video_job(ADDRESS, VideoRequest(prompt="x"))
    await asyncio.gather(a.execute(job_id), b.execute(job_id), a.execute(job_id))
    assert len(veo.video_generation_requests) == 1
    assert [o.job_id for o in delivered] == [job_id]
    assert (await state_of(job_id)).state == JobState.DELIVERED


async def test_a_failed_delivery_is_retried_later_not_lost(service: JobService, upstreams: Upstreams) -> None:
    attempts: list[str] = []

    async def flaky(outcome: JobOutcome) -> None:
        attempts.append(outcome.job_id)
        if len(attempts) == 1:
            raise ConnectionError("platform down")

    executor = JobExecutor(service, flaky)
    job_id = await service.create_thumbnail_job(ADDRESS, ThumbnailRequest(title="x"))
    await executor.execute(job_id)
    assert (await state_of(job_id)).state == JobState.SUCCEEDED
    assert await service.unfinished_job_ids() == [job_id]
    await executor.execute(job_id)
    assert attempts == [job_id, job_id]
    assert (await state_of(job_id)).state == JobState.DELIVERED


async def test_jobs_list_cancel_and_resend(service: JobService, upstreams: Upstreams) -> None:
    from connectors.errors import UserInputError

    queued = await service.create_video_job(ADDRESS, VideoRequest(prompt="a queued one"))
    done = await service.create_thumbnail_job(ADDRESS, ThumbnailRequest(title="Done"))
    await service.run(done)
    views = await service.list_jobs(ADDRESS.user_key)
    assert {v.id for v in views} == {queued, done}
    assert await service.list_jobs("telegram:someone-else") == []
    cancelled = await service.cancel(ADDRESS.user_key, queued[:8])
    assert cancelled.id == queued and (await state_of(queued)).state == JobState.CANCELLED
    with pytest.raises(UserInputError, match="only a queued job"):
        await service.cancel(ADDRESS.user_key, done[:8])
    with pytest.raises(UserInputError, match="no job"):
        await service.cancel("telegram:someone-else", done[:8])
    outcome = await service.result_for_resend(ADDRESS.user_key, done[:8])
    assert outcome.media_path is not None and outcome.media_path.read_bytes().startswith(b"\x89PNG")


async def test_media_past_retention_is_removed(service: JobService, upstreams: Upstreams) -> None:
    job_id = await service.create_thumbnail_job(ADDRESS, ThumbnailRequest(title="x"))
    outcome = await service.run(job_id)
    assert outcome is not None and outcome.media_path is not None and outcome.media_path.exists()
    assert await service.purge_media(timedelta(days=1)) == 0
    assert await service.purge_media(timedelta(seconds=-1)) == 1
    assert not outcome.media_path.exists()
    assert (await service.list_jobs(ADDRESS.user_key))[0].has_result is False


async def test_inputs_of_failed_and_cancelled_jobs_are_purged_too(service: JobService, upstreams: Upstreams) -> None:
    _, veo = upstreams
    veo.video_outcome = "error"
    failed = await service.create_video_job(ADDRESS, VideoRequest(prompt="x", image=png_bytes()))
    cancelled = await service.create_video_job(ADDRESS, VideoRequest(prompt="y", image=png_bytes()))
    outcome = await service.run(failed)
    assert outcome is not None and not outcome.ok
    await service.cancel(ADDRESS.user_key, cancelled[:8])
    inputs = [service.media_dir / "inputs" / f"{job_id}.img" for job_id in (failed, cancelled)]
    assert all(path.exists() for path in inputs)
    assert await service.purge_media(timedelta(days=1)) == 0
    assert all(path.exists() for path in inputs)
    assert await service.purge_media(timedelta(seconds=-1)) == 2
    assert not any(path.exists() for path in inputs)
    assert await service.purge_media(timedelta(seconds=-1)) == 0
    assert {view.state for view in await service.list_jobs(ADDRESS.user_key)} == {JobState.FAILED, JobState.CANCELLED}


async def test_a_video_past_the_hard_deadline_fails_clearly_after_one_late_notice(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    veo.polls_until_done = 10**6  # Veo never finishes
    configure_services(
        dataclasses.replace(TEST_SERVICE_CONFIG, video_deadline_seconds=0.1, video_hard_deadline_seconds=1)
    )
    delivered: list[JobOutcome] = []
    late: list[JobLate] = []

    async def deliver(outcome: JobOutcome) -> None:
        delivered.append(outcome)

    async def notify_late(notice: JobLate) -> None:
        late.append(notice)

    executor = JobExecutor(JobService(tmp_path / "media"), deliver, notify_late)
    job_id = await executor.jobs.create_video_job(ADDRESS, VideoRequest(prompt="x", duration_seconds=4))
    await executor.execute(job_id)
    assert [notice.job_id for notice in late] == [job_id]
    [outcome] = delivered
    assert outcome.error is not None and "did not finish this video within 1 s" in outcome.error
    assert "not delivered" in outcome.error and "/video" in outcome.error
    job = await state_of(job_id)
    assert job.state == JobState.FAILED and job.delivered_at is not None
    assert len(veo.video_generation_requests) == 1 and len(veo.poll_requests) > 1


async def test_a_restarted_instance_takes_back_its_own_leases_at_once(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    _, veo = upstreams
    veo.polls_until_done = 10**6
    configure_services(dataclasses.replace(TEST_SERVICE_CONFIG, video_deadline_seconds=0.1))
    before = JobService(tmp_path / "media", owner="host-a:run", lease_seconds=90)
    job_id = await before.create_video_job(ADDRESS, VideoRequest(prompt="x", duration_seconds=4))
    late: list[JobLate] = []

    async def notify_late(notice: JobLate) -> None:
        late.append(notice)

    killed = asyncio.create_task(before.run(job_id, on_late=notify_late))
    await wait_until(lambda: _told(late), "the video to be late")
    killed.cancel()  # SIGKILL: the 90 s lease stays on the row
    with pytest.raises(asyncio.CancelledError):
        await killed

    restarted_at = utcnow()
    after = JobService(tmp_path / "media", owner="host-a:run", lease_seconds=90)
    elsewhere = JobService(tmp_path / "media", owner="host-b:run", lease_seconds=90)
    own_new_job = await after.create_thumbnail_job(ADDRESS, ThumbnailRequest(title="made after the restart"))
    assert await after.unfinished_job_ids() == []  # both leases are live
    assert await elsewhere.reclaim_orphaned_leases(restarted_at) == []
    assert await after.reclaim_orphaned_leases(restarted_at) == [job_id]
    assert await after.unfinished_job_ids() == [job_id]
    assert (await state_of(own_new_job)).lease_owner == "host-a:run"

    veo.polls_until_done = 1
    outcome = await after.run(job_id, on_late=notify_late)
    assert outcome is not None and outcome.ok
    assert len(late) == 1  # the user was told once, before the restart
    assert len(veo.video_generation_requests) == 1


async def _told(late: list[JobLate]) -> bool:
    return bool(late)


async def test_redis_queue_with_a_worker_runs_and_delivers_once(
    tmp_path: Path, database: str, upstreams: Upstreams, redis_url: str
) -> None:
    _, veo = upstreams
    delivered: list[str] = []
    done = asyncio.Event()

    async def deliver(outcome: JobOutcome) -> None:
        delivered.append(outcome.job_id)
        done.set()

    service = JobService(tmp_path / "media")
    queue = JobQueue(JobExecutor(service, deliver), redis_url, queue_name=f"reelwright:test:{uuid.uuid4().hex}")
    await queue.start()
    worker = asyncio.create_task(queue.run_worker())
    try:
        job_id = await service.create_video_job(ADDRESS, VideoRequest(prompt="x"))
        await queue.enqueue(job_id)
        await queue.enqueue(job_id)  # a duplicate message is harmless
        await asyncio.wait_for(done.wait(), timeout=30)
        await wait_until(lambda: _delivered(job_id), "the delivery mark")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await queue.stop()
    assert delivered == [job_id]
    assert len(veo.video_generation_requests) == 1


async def _delivered(job_id: str) -> bool:
    return (await state_of(job_id)).state == JobState.DELIVERED


def test_payload_never_holds_media_bytes(tmp_path: Path) -> None:
    """Images go to MEDIA_DIR; the row keeps a path (no base64 blobs in the database)."""
    from services.jobs import VideoPayload

    assert "image" not in json.dumps(VideoPayload.model_json_schema()["properties"]).replace("image_path", "")


async def test_a_shorts_clips_are_purged_with_their_short_never_before(service: JobService) -> None:
    """A clip made days ago belongs to a short that failed later: a retry still needs its file."""
    short_id = await service.create_short_job(
        ADDRESS, ShortPayload(idea="a cat", segments=3, byte_budget=50 << 20, captions=False)
    )
    story = three_clip_story()
    short = await state_of(short_id)
    clip_ids = await service.clip_jobs(short, ShortPayload.model_validate_json(short.payload), story)
    clip_file = service.media_dir / "results" / f"{clip_ids[0]}.mp4"
    clip_file.parent.mkdir(parents=True, exist_ok=True)
    clip_file.write_bytes(b"a made clip")
    long_ago = datetime.now(UTC) - timedelta(days=30)
    async with sessions().begin() as session:
        await session.execute(
            update(JobRecord)
            .where(JobRecord.id == clip_ids[0])
            .values(state=JobState.SUCCEEDED, result_path=str(clip_file), finished_at=long_ago)
        )
        await session.execute(
            update(JobRecord)
            .where(JobRecord.id == short_id)
            .values(state=JobState.FAILED, finished_at=datetime.now(UTC))
        )

    await service.purge_media(timedelta(days=7))
    assert clip_file.is_file(), "the short is within its retention: its clips stay"
    await service.purge_media(timedelta(seconds=-1))
    assert not clip_file.exists() and not short_dir(service.media_dir, short_id).exists()


async def test_only_a_finished_job_is_marked_delivered(service: JobService) -> None:
    """A retried short is queued again: a late delivery mark of its failure must not end it."""
    short_id = await service.create_short_job(ADDRESS, ShortPayload(idea="a cat", segments=3, byte_budget=50 << 20))
    assert await service.mark_delivered(short_id) is False
    assert (await state_of(short_id)).state == JobState.QUEUED
