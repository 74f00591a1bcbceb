"""Durable generation jobs: the row is written before the paid call, the provider's operation name
the moment it is known, and every step after a crash resumes from the row, never paying twice.

States: queued → submitting (the paid call is in flight) → running (operation name stored) →
succeeded → delivered, or failed, or cancelled while queued. ``delivered_at`` marks that the result
(or the error message of a failed job) was posted; a failed job stays ``failed``. A job found in
``submitting`` after a crash is failed with an explanation instead of being submitted again: whether
the provider took (and billed) the first submission cannot be known.

A lease on the row (owner + expiry, renewed while polling) keeps two processes from working on one
job at once. The owner is the process's stable instance id, so a restarted process takes back the
leases of the process it replaces at once (``reclaim_orphaned_leases``) instead of waiting for them
to expire; two live processes must therefore never share an owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.database import sessions
from connectors.errors import ReelwrightError, UserInputError
from services.budgets import BudgetBook, BudgetRefusal, Reservation
from services.characters import CharacterProfile
from services.config import service_config
from services.files import write_whole
from services.ledger import UsageLedger
from services.shorts import (
    CHARACTER_IMAGE,
    CLIP_KIND,
    CLIP_TRIES,
    MAX_CLIP_SECONDS,
    SHORT_KIND,
    LateSink,
    ShortPayload,
    ShortPipeline,
    ShortProgress,
    remove_short_files,
    short_dir,
    short_estimate_usage,
)
from services.store.models import UNFINISHED_STATES, JobRecord, JobState, utcnow
from services.story import Story
from services.thumbnail import ThumbnailRequest, generate_thumbnail_image
from services.usage import Usage
from services.video import (
    VideoProgress,
    VideoRequest,
    generate_video_from_payload,
    validate_video_request,
)

log = logging.getLogger(__name__)

LEASE_SECONDS = 90
#: How often a short waits to see whether a clip another process held has come free.
CLIP_LEASE_CHECK_SECONDS = 2.0
DAMAGED_PAYLOAD = "This job's stored request is damaged and cannot be run. Please ask again."
INTERRUPTED_SUBMISSION = (
    "The bot restarted while this video was being submitted. It was not submitted again, so you are "
    "not charged twice. Please ask again if it does not arrive."
)


@dataclass(frozen=True)
class JobAddress:
    """Where a job's result goes, needing no live interaction: a platform and a chat/channel id."""

    platform: str
    chat_id: str
    user_key: str
    chat_key: str | None = None  # whose budget pays (a Discord guild, else the chat)


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    kind: str
    address: JobAddress
    media_path: Path | None = None
    mime_type: str | None = None
    caption: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class JobLate:
    """A video still rendering past the deadline: the user is told it will follow."""

    job_id: str
    kind: str
    address: JobAddress
    elapsed_seconds: float


class JobView(BaseModel):
    id: str
    kind: str
    state: str
    summary: str
    created_at: datetime
    finished_at: datetime | None
    delivered_at: datetime | None
    error: str | None
    cost: Decimal | None
    has_result: bool
    clips: list[JobView] = []


class VideoPayload(BaseModel):
    chat_key: str | None = None
    reservation: Reservation | None = None
    prompt: str
    duration_seconds: int
    aspect_ratio: str
    negative_prompt: str | None = None
    character: CharacterProfile | None = None
    image_path: str | None = None
    #: A short's clip: its segment number, and how often it has been tried in this run of its short.
    segment: int | None = None
    tries: int = 1


class ThumbnailPayload(BaseModel):
    chat_key: str | None = None
    reservation: Reservation | None = None
    title: str
    story_summary: str | None = None
    aspect_ratio: str = "16:9"
    character: CharacterProfile | None = None
    #: The character's image, kept for this job (the thumbnail's reference picture).
    image_path: str | None = None


JobProgress = Callable[[VideoProgress | ShortProgress], Awaitable[None]]
JobLateHandler = Callable[[JobLate], Awaitable[None]]


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class JobService:
    def __init__(
        self,
        media_dir: Path,
        *,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        ledger: UsageLedger | None = None,
        budgets: BudgetBook | None = None,
        video_model: str = "veo",
        image_model: str = "image",
    ) -> None:
        self.media_dir = media_dir
        self.ledger = ledger
        self.budgets = budgets
        self.video_model = video_model
        self.image_model = image_model
        self.owner = owner or uuid.uuid4().hex
        self.lease = timedelta(seconds=lease_seconds)
        self.shorts = ShortPipeline(self)

    # -- creating -----------------------------------------------------------------------------------

    async def create_video_job(
        self, address: JobAddress, request: VideoRequest, reservation: Reservation | None = None
    ) -> str:
        """Validate (no paid call for bad input), keep the input image on disk, write the row.

        ``reservation`` is the budget held for this job: from now on the job settles or releases it.
        """
        async with self._releasing_on_error(reservation):
            request = validate_video_request(request)
            job_id = uuid.uuid4().hex
            image_path = await self._keep_input(job_id, request.image)
            payload = VideoPayload(
                chat_key=address.chat_key,
                reservation=reservation,
                prompt=request.prompt,
                duration_seconds=request.duration_seconds,
                aspect_ratio=request.aspect_ratio,
                negative_prompt=request.negative_prompt,
                character=request.character,
                image_path=image_path,
            )
            await self._insert(job_id, "video", address, payload)
            return job_id

    async def create_thumbnail_job(
        self, address: JobAddress, request: ThumbnailRequest, reservation: Reservation | None = None
    ) -> str:
        async with self._releasing_on_error(reservation):
            if not request.title.strip():
                raise UserInputError("Please give the thumbnail a title.")
            job_id = uuid.uuid4().hex
            image_path = await self._keep_input(job_id, request.character_image)
            payload = ThumbnailPayload(
                chat_key=address.chat_key,
                reservation=reservation,
                title=request.title,
                story_summary=request.story_summary,
                aspect_ratio=request.aspect_ratio,
                character=request.character,
                image_path=image_path,
            )
            await self._insert(job_id, "thumbnail", address, payload)
            return job_id

    async def create_short_job(
        self, address: JobAddress, payload: ShortPayload, character_image: bytes | None = None
    ) -> str:
        """The parent row of a short; its reservation (in ``payload``) is the job's from now on.
        ``character_image`` is kept in the short's folder: every clip starts from it."""
        async with self._releasing_on_error(payload.reservation):
            job_id = uuid.uuid4().hex
            work = short_dir(self.media_dir, job_id)
            await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
            if character_image is not None:
                await asyncio.to_thread(write_whole, work / CHARACTER_IMAGE, character_image)
                payload = payload.model_copy(update={"character_image_path": str(work / CHARACTER_IMAGE)})
            await self._insert(
                job_id,
                SHORT_KIND,
                address,
                payload.model_copy(update={"chat_key": address.chat_key}),
                input_path=str(work),
            )
            return job_id

    async def clip_jobs(self, short: JobRecord, payload: ShortPayload, story: Story) -> list[str]:
        """The short's clip jobs in segment order, created (all in one transaction) on first call."""
        async with sessions().begin() as session:
            # Renewing the short's own lease locks its row: a second runner waits here, then finds
            # the short held by the first or the clips already made, and never makes a second set.
            held = await session.execute(
                update(JobRecord)
                .where(JobRecord.id == short.id, JobRecord.lease_owner == self.owner)
                .values(lease_expires_at=utcnow() + self.lease)
            )
            if getattr(held, "rowcount", 0) != 1:
                raise LeaseLost(short.id)
            made = await session.scalar(select(func.count()).where(JobRecord.parent_id == short.id))
            if not made:
                address = JobAddress(short.platform, short.chat_id, short.user_key)
                for segment in story.segments:
                    clip = VideoPayload(
                        chat_key=payload.chat_key,
                        prompt=segment.visual_prompt,
                        duration_seconds=segment.duration_seconds,
                        aspect_ratio=payload.aspect,
                        character=payload.character,
                        image_path=payload.character_image_path,
                        segment=segment.number,
                    )
                    # The clip's image is its short's, removed with the short's folder, not with the clip.
                    session.add(
                        self._row(uuid.uuid4().hex, CLIP_KIND, address, clip, parent_id=short.id, input_path=None)
                    )
        return [clip.id for clip in await self.clips_of(short.id)]

    async def clips_of(self, short_id: str) -> list[JobRecord]:
        async with sessions()() as session:
            rows = await session.scalars(select(JobRecord).where(JobRecord.parent_id == short_id))
            clips = list(rows)
        return sorted(clips, key=_segment_of)

    async def clip_paths(self, short_id: str) -> list[Path]:
        """The made clips of a short, in segment order."""
        return [Path(clip.result_path) for clip in await self.clips_of(short_id) if clip.result_path]

    async def run_clip(self, clip_id: str, on_late: LateSink) -> JobOutcome:
        """Make (or resume) one of a short's clips in this process, which holds the short.

        A clip still leased by a process that died holding the short is waited for until its lease
        runs out (at most about a lease), then taken over; it is never made a second time.
        """

        async def late(notice: JobLate) -> None:
            await on_late(notice.elapsed_seconds)

        give_up = time.monotonic() + 2 * self.lease.total_seconds()
        while True:
            outcome = await self.run(clip_id, on_late=late)
            if outcome is not None:
                return outcome
            clip = await self._load(clip_id)
            if clip is None:
                return JobOutcome(clip_id, CLIP_KIND, JobAddress("", "", ""), error="This clip's job is gone.")
            address = JobAddress(clip.platform, clip.chat_id, clip.user_key)
            if clip.state in (JobState.SUCCEEDED, JobState.DELIVERED) and clip.result_path:
                return self._outcome(clip, address)
            if time.monotonic() > give_up:
                return JobOutcome(clip_id, CLIP_KIND, address, error="This clip is being made by another bot process.")
            await asyncio.sleep(CLIP_LEASE_CHECK_SECONDS)

    async def clip_may_try_again(self, clip_id: str) -> bool:
        """Queue a failed clip once more with the same prompt, unless it has had its tries or its
        submission was interrupted (the provider may have billed it: only /jobs retry makes it again)."""
        clip = await self._load(clip_id)
        if clip is None or clip.state != JobState.FAILED or clip.error == INTERRUPTED_SUBMISSION:
            return False
        payload = VideoPayload.model_validate_json(clip.payload)
        if payload.tries >= CLIP_TRIES:
            return False
        await self._requeue_clip(clip_id, payload.model_copy(update={"tries": payload.tries + 1}))
        return True

    async def _requeue_clip(self, clip_id: str, payload: VideoPayload) -> None:
        await self._set(clip_id, **_requeued(payload))

    async def record_short_usage(self, short: JobRecord, entries: list[tuple[str, Usage]]) -> None:
        """A short's own paid step (story, narration, thumbnail, copy): into the ledger and onto its row."""
        if self.ledger is None or not entries:
            return
        payload = ShortPayload.model_validate_json(short.payload)

        async def add_cost(session: AsyncSession, total: Decimal) -> None:
            await session.execute(
                update(JobRecord).where(JobRecord.id == short.id).values(cost=func.coalesce(JobRecord.cost, 0) + total)
            )

        spent = await self.ledger.record_with(
            entries,
            add_cost,
            user_key=short.user_key,
            chat_key=payload.chat_key or f"{short.platform}:{short.chat_id}",
            command=SHORT_KIND,
        )
        if payload.reservation is not None and self.budgets is not None:
            await self.budgets.consume(payload.reservation, spent)

    async def short_spent(self, short_id: str) -> Decimal:
        """Everything paid for a short: its own steps and its clips."""
        short = await self._load(short_id)
        own = (short.cost if short is not None else None) or Decimal("0")
        return own + sum((clip.cost or Decimal("0") for clip in await self.clips_of(short_id)), Decimal("0"))

    async def finish_short(self, short_id: str, manifest: Path) -> None:
        """The short is made: record where its manifest is, and settle its reservation to what it cost
        (only while this process holds it: a short is settled once)."""
        finished = await self._set_own(
            short_id,
            state=JobState.SUCCEEDED,
            result_path=str(manifest),
            result_mime="application/json",
            finished_at=utcnow(),
        )
        if not finished:
            raise LeaseLost(short_id)
        short = await self._load(short_id)
        if short is not None:
            await self._release_budget(short)

    @contextlib.asynccontextmanager
    async def _releasing_on_error(self, reservation: Reservation | None) -> AsyncIterator[None]:
        """A job that could not be created spends nothing: give its budget back."""
        try:
            yield
        except BaseException:
            if reservation is not None and self.budgets is not None:
                await self.budgets.release(reservation)
            raise

    async def _keep_input(self, job_id: str, image: bytes | None) -> str | None:
        """An image the job will send, kept on disk (never in the row) until the media purge."""
        if image is None:
            return None
        path = self.media_dir / "inputs" / f"{job_id}.img"
        await asyncio.to_thread(write_whole, path, image)
        return str(path)

    async def _insert(
        self, job_id: str, kind: str, address: JobAddress, payload: BaseModel, *, input_path: str | None = None
    ) -> None:
        """The job's row; ``input_path`` is what the media purge removes with its result (an uploaded
        image, a short's working folder; by default the payload's image)."""
        async with sessions().begin() as session:
            session.add(
                self._row(job_id, kind, address, payload, input_path=input_path or getattr(payload, "image_path", None))
            )

    def _row(
        self,
        job_id: str,
        kind: str,
        address: JobAddress,
        payload: BaseModel,
        *,
        input_path: str | None,
        parent_id: str | None = None,
    ) -> JobRecord:
        """A new queued job, leased to this process (which runs it next)."""
        return JobRecord(
            id=job_id,
            kind=kind,
            parent_id=parent_id,
            state=JobState.QUEUED,
            user_key=address.user_key,
            platform=address.platform,
            chat_id=address.chat_id,
            payload=payload.model_dump_json(),
            input_path=input_path,
            lease_owner=self.owner,
            lease_expires_at=utcnow() + self.lease,
        )

    # -- running ------------------------------------------------------------------------------------

    async def _acquire(self, job_id: str) -> JobRecord | None:
        """Take the job's lease if nobody else holds a live one; None means leave it alone."""
        now = utcnow()
        async with sessions().begin() as session:
            result = await session.execute(
                update(JobRecord)
                .where(
                    JobRecord.id == job_id,
                    JobRecord.state.in_([str(s) for s in UNFINISHED_STATES]),
                    JobRecord.delivered_at.is_(None),
                    or_(
                        JobRecord.lease_expires_at.is_(None),
                        JobRecord.lease_expires_at < now,
                        JobRecord.lease_owner == self.owner,
                    ),
                )
                .values(lease_owner=self.owner, lease_expires_at=now + self.lease, attempts=JobRecord.attempts + 1)
            )
            if getattr(result, "rowcount", 0) != 1:
                return None
            return await session.get(JobRecord, job_id)

    async def _set(self, job_id: str, **values: Any) -> None:
        async with sessions().begin() as session:
            await session.execute(update(JobRecord).where(JobRecord.id == job_id).values(**values))

    async def _renew(self, job_id: str) -> None:
        await self._set(job_id, lease_expires_at=utcnow() + self.lease)

    async def _set_own(self, job_id: str, **values: Any) -> bool:
        """Change a job only while this process holds its lease; False when another one does."""
        async with sessions().begin() as session:
            result = await session.execute(
                update(JobRecord).where(JobRecord.id == job_id, JobRecord.lease_owner == self.owner).values(**values)
            )
            return getattr(result, "rowcount", 0) == 1

    async def _renew_own(self, job_id: str) -> bool:
        return await self._set_own(job_id, lease_expires_at=utcnow() + self.lease)

    async def _fail_own(self, job_id: str, message: str) -> bool:
        return await self._set_own(job_id, state=JobState.FAILED, error=message, finished_at=utcnow())

    async def release(self, job_id: str) -> None:
        await self._set(job_id, lease_owner=None, lease_expires_at=None)

    async def reclaim_orphaned_leases(self, started_at: datetime) -> list[str]:
        """Free the leases this owner's previous incarnation held (rows untouched since this process
        started), so that they are resumed now rather than when the dead process's lease expires."""
        unfinished = [str(s) for s in UNFINISHED_STATES]
        orphaned = (
            JobRecord.lease_owner == self.owner,
            JobRecord.state.in_(unfinished),
            JobRecord.delivered_at.is_(None),
            JobRecord.updated_at < started_at,
        )
        async with sessions().begin() as session:
            ids = list(await session.scalars(select(JobRecord.id).where(*orphaned)))
            if ids:
                await session.execute(
                    update(JobRecord)
                    .where(JobRecord.id.in_(ids), *orphaned)
                    .values(lease_owner=None, lease_expires_at=None)
                )
        if ids:
            log.info("took back %d job(s) leased by %s before it restarted", len(ids), self.owner)
        return ids

    async def run(
        self, job_id: str, progress: JobProgress | None = None, on_late: JobLateHandler | None = None
    ) -> JobOutcome | None:
        """Advance the job as far as it goes: submit or resume, store the result. Returns the outcome
        to deliver, or None when another process holds the job or it needs nothing more.
        ``on_late`` hears once that a video is past the deadline and still being made."""
        job = await self._acquire(job_id)
        if job is None:
            return None
        address = JobAddress(job.platform, job.chat_id, job.user_key)
        try:
            if job.state in (JobState.SUCCEEDED, JobState.FAILED):
                return self._outcome(job, address)
            reservation = _reservation_of(job)
            if reservation is not None and self.budgets is not None:
                # A restarted process no longer holds it in memory; a short holds what it has not spent yet.
                if job.kind == SHORT_KIND:
                    spent = await self.short_spent(job.id) - ShortPayload.model_validate_json(job.payload).spent_before
                    reservation = reservation.model_copy(
                        update={"amount": max(Decimal("0"), reservation.amount - spent)}
                    )
                await self.budgets.hold(reservation)
            if job.state == JobState.SUBMITTING:
                await self._fail(job_id, INTERRUPTED_SUBMISSION)
            else:
                await self._work(job, progress, on_late)
            finished = await self._load(job_id)
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            return None  # the process that holds the job now finishes and delivers it
        except Exception:
            log.exception("job %s crashed", job_id)
            await self._fail(job_id, "Something went wrong with this job on our side. Please try again.")
            finished = await self._load(job_id)
        if finished is None:
            return None
        if finished.state == JobState.FAILED:
            await self._release_budget(finished)
        return self._outcome(finished, address)

    async def _release_budget(self, job: JobRecord) -> None:
        """A video or thumbnail that failed spent nothing that was accounted: its held estimate goes
        back. A short that ended (made or failed) is settled to what it paid for under it."""
        reservation = _reservation_of(job)
        if reservation is None or self.budgets is None:
            return
        if job.kind == SHORT_KIND:
            before = ShortPayload.model_validate_json(job.payload).spent_before
            await self.budgets.settle(reservation, max(Decimal("0"), await self.short_spent(job.id) - before))
        else:
            await self.budgets.release(reservation)

    async def _work(self, job: JobRecord, progress: JobProgress | None, on_late: JobLateHandler | None) -> None:
        if job.kind == SHORT_KIND:
            await self._run_short(job, progress, on_late)
            return
        try:
            payload: VideoPayload | ThumbnailPayload = (
                VideoPayload.model_validate_json(job.payload)
                if job.kind in ("video", CLIP_KIND)
                else ThumbnailPayload.model_validate_json(job.payload)
            )
        except (ValidationError, ValueError):
            log.error("job %s has a damaged payload", job.id)
            await self._fail(job.id, DAMAGED_PAYLOAD)
            return
        try:
            if isinstance(payload, VideoPayload):
                await self._run_video(job, payload, progress, on_late)
            else:
                await self._run_thumbnail(job, payload)
        except (ValidationError, FileNotFoundError):
            log.error("job %s has a damaged payload or lost its input", job.id)
            await self._fail(job.id, DAMAGED_PAYLOAD)
        except ReelwrightError as exc:
            log.warning("job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            await self._fail(job.id, exc.user_message)

    async def _run_short(self, job: JobRecord, progress: JobProgress | None, on_late: JobLateHandler | None) -> None:
        try:
            payload = ShortPayload.model_validate_json(job.payload)
        except (ValidationError, ValueError):
            log.error("job %s has a damaged payload", job.id)
            await self._fail(job.id, DAMAGED_PAYLOAD)
            return
        if job.state == JobState.QUEUED:
            await self._set(job.id, state=JobState.RUNNING, submitted_at=job.submitted_at or utcnow())
        address = JobAddress(job.platform, job.chat_id, job.user_key)

        async def late(elapsed: float) -> None:
            if on_late is not None:
                await on_late(JobLate(job.id, job.kind, address, elapsed))

        pipeline = asyncio.ensure_future(self.shorts.run(job, payload, progress, late))
        lost = asyncio.Event()

        async def keep_lease() -> None:
            """Renew the short's lease while it runs; stop the short if another process has taken it."""
            while True:
                await asyncio.sleep(self.lease.total_seconds() / 3)
                try:
                    held = await self._renew_own(job.id)
                except Exception:
                    log.warning("renewing the lease of short %s failed; trying again", job.id, exc_info=True)
                    continue
                if not held:
                    log.error("short %s is held by another process now; this one stops working on it", job.id)
                    lost.set()
                    pipeline.cancel()
                    return

        keeper = asyncio.create_task(keep_lease())
        try:
            await pipeline
        except asyncio.CancelledError:
            if lost.is_set():
                raise LeaseLost(job.id) from None
            raise
        except ReelwrightError as exc:
            log.warning("short %s failed: %s: %s", job.id, type(exc).__name__, exc)
            if not await self._fail_own(job.id, exc.user_message):
                raise LeaseLost(job.id) from exc
        finally:
            keeper.cancel()
            pipeline.cancel()
            await asyncio.gather(keeper, pipeline, return_exceptions=True)

    async def _run_video(
        self, job: JobRecord, payload: VideoPayload, progress: JobProgress | None, on_late: JobLateHandler | None
    ) -> None:
        image = await _read_input(payload.image_path)
        request = VideoRequest(
            prompt=payload.prompt,
            duration_seconds=payload.duration_seconds,
            aspect_ratio=payload.aspect_ratio,
            negative_prompt=payload.negative_prompt,
            character=payload.character,
            image=image,
        )
        resume = job.operation_name if job.state == JobState.RUNNING else None
        already_elapsed = 0.0
        if resume is None:
            await self._set(job.id, state=JobState.SUBMITTING, submitted_at=utcnow())
        else:
            submitted = as_utc(job.submitted_at or job.created_at) or utcnow()
            already_elapsed = max(0.0, (utcnow() - submitted).total_seconds())

        async def on_operation(name: str) -> None:
            await self._set(job.id, state=JobState.RUNNING, operation_name=name)

        async def on_progress(update_: VideoProgress) -> None:
            await self._renew(job.id)
            if progress is not None:
                await progress(update_)

        async def late(elapsed: float) -> None:
            if on_late is not None:
                await on_late(JobLate(job.id, job.kind, JobAddress(job.platform, job.chat_id, job.user_key), elapsed))

        result = await generate_video_from_payload(
            request,
            on_operation=on_operation,
            on_progress=on_progress,
            on_late=late,
            resume_operation=resume,
            already_elapsed=already_elapsed,
        )
        command = SHORT_KIND if job.kind == CLIP_KIND else "video"
        paid = (command, self.video_model, result.usage)
        await self._store_result(job, payload, "mp4", result.video, result.mime_type, paid)

    async def _run_thumbnail(self, job: JobRecord, payload: ThumbnailPayload) -> None:
        image = await _read_input(payload.image_path)
        await self._set(job.id, state=JobState.SUBMITTING, submitted_at=utcnow())
        thumbnail = await generate_thumbnail_image(
            ThumbnailRequest(
                title=payload.title,
                story_summary=payload.story_summary,
                aspect_ratio=payload.aspect_ratio,
                character=payload.character,
                character_image=image,
            )
        )
        extension = "jpg" if "jpeg" in thumbnail.mime_type else "png"
        paid = ("thumbnail", thumbnail.model, thumbnail.usage)
        await self._store_result(job, payload, extension, thumbnail.image, thumbnail.mime_type, paid)

    async def _store_result(
        self,
        job: JobRecord,
        payload: VideoPayload | ThumbnailPayload,
        extension: str,
        data: bytes,
        mime: str,
        paid: tuple[str, str, Usage],
    ) -> None:
        """The result goes to MEDIA_DIR (never the database); the row records where and the cost, in one
        transaction with the usage (command, model, usage) recorded against the job's user and chat
        (resumed jobs too). The budget held for the job is then settled to that real cost."""
        command, model, usage = paid
        chat_key = payload.chat_key or f"{job.platform}:{job.chat_id}"
        path = self.media_dir / "results" / f"{job.id}.{extension}"
        try:
            await asyncio.to_thread(write_whole, path, data)
        except Exception:
            if self.ledger is not None:  # paid for, though it could not be kept: the job fails
                self.ledger.record(user_key=job.user_key, chat_key=chat_key, command=command, model=model, usage=usage)
            raise
        values = {
            "state": JobState.SUCCEEDED,
            "result_path": str(path),
            "result_mime": mime,
            "finished_at": utcnow(),
        }
        if self.ledger is None:
            await self._set(job.id, **values)
            return

        async def succeed(session: AsyncSession, cost: Decimal) -> None:
            await session.execute(update(JobRecord).where(JobRecord.id == job.id).values(**values, cost=cost))

        cost = await self.ledger.record_with(
            [(model, usage)], succeed, user_key=job.user_key, chat_key=chat_key, command=command
        )
        if payload.reservation is not None and self.budgets is not None:
            await self.budgets.settle(payload.reservation, cost)
        elif job.parent_id is not None and self.budgets is not None:
            short = await self._load(job.parent_id)
            reservation = _reservation_of(short) if short is not None else None
            if reservation is not None:
                await self.budgets.consume(reservation, cost)

    async def _fail(self, job_id: str, message: str) -> None:
        await self._set(job_id, state=JobState.FAILED, error=message, finished_at=utcnow())

    async def _load(self, job_id: str) -> JobRecord | None:
        async with sessions()() as session:
            return await session.get(JobRecord, job_id)

    def _outcome(self, job: JobRecord, address: JobAddress) -> JobOutcome:
        caption = _caption(job)
        if job.state == JobState.FAILED or job.result_path is None:
            return JobOutcome(job.id, job.kind, address, caption=caption, error=job.error or "The job failed.")
        return JobOutcome(
            job.id, job.kind, address, media_path=Path(job.result_path), mime_type=job.result_mime, caption=caption
        )

    # -- delivery -----------------------------------------------------------------------------------

    async def mark_delivered(self, job_id: str) -> bool:
        """The idempotency mark: only the first call for a job returns True. A failed job keeps its
        state (its error message is what was delivered), so /jobs shows it as failed. A short's
        made clips are delivered with it."""
        async with sessions().begin() as session:
            await session.execute(
                update(JobRecord)
                .where(JobRecord.parent_id == job_id, JobRecord.state == JobState.SUCCEEDED)
                .values(state=JobState.DELIVERED, delivered_at=utcnow(), lease_owner=None, lease_expires_at=None)
            )
            result = await session.execute(
                update(JobRecord)
                .where(
                    JobRecord.id == job_id,
                    JobRecord.delivered_at.is_(None),
                    JobRecord.state.in_([JobState.SUCCEEDED, JobState.FAILED]),
                )
                .values(
                    state=case((JobRecord.state == JobState.FAILED, JobState.FAILED), else_=JobState.DELIVERED),
                    delivered_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            return getattr(result, "rowcount", 0) == 1

    # -- queries and user actions -------------------------------------------------------------------

    async def unfinished_job_ids(self, *, include_leased: bool = False) -> list[str]:
        """Jobs not yet delivered; by default only those no live process holds (free or expired lease)."""
        now = utcnow()
        query = select(JobRecord.id).where(
            JobRecord.state.in_([str(s) for s in UNFINISHED_STATES]),
            JobRecord.delivered_at.is_(None),
            JobRecord.parent_id.is_(None),  # a short's clips run inside their short
        )
        if not include_leased:
            query = query.where(or_(JobRecord.lease_expires_at.is_(None), JobRecord.lease_expires_at < now))
        async with sessions()() as session:
            rows = await session.execute(query.order_by(JobRecord.created_at))
            return [row[0] for row in rows]

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._load(job_id)

    async def list_jobs(self, user_key: str, limit: int = 10) -> list[JobView]:
        """The user's newest jobs; a short with its clips, and its cost the sum of everything it paid."""
        async with sessions()() as session:
            rows = list(
                await session.scalars(
                    select(JobRecord)
                    .where(JobRecord.user_key == user_key, JobRecord.parent_id.is_(None))
                    .order_by(JobRecord.created_at.desc())
                    .limit(limit)
                )
            )
            short_ids = [job.id for job in rows if job.kind == SHORT_KIND]
            children = (
                list(await session.scalars(select(JobRecord).where(JobRecord.parent_id.in_(short_ids))))
                if short_ids
                else []
            )
        views = []
        for job in rows:
            clips = sorted((clip for clip in children if clip.parent_id == job.id), key=_segment_of)
            view = _view(job, [_view(clip) for clip in clips])
            if clips:
                view.cost = (job.cost or Decimal("0")) + sum(
                    (clip.cost or Decimal("0") for clip in clips), Decimal("0")
                )
            views.append(view)
        return views

    async def retry(self, user_key: str, job_ref: str) -> tuple[JobRecord, Decimal]:
        """Queue a failed short again to make only what it is missing. What that may cost is
        reserved first: every clip not yet made at its seconds (clips already made are never paid
        for again), plus the short's own steps at their estimate (those already made cost nothing).
        Returns the short and that estimate; a refused reservation raises ``RetryRefused``."""
        job = await self.find_users_job(user_key, job_ref)
        if job.kind != SHORT_KIND:
            raise UserInputError(f"Job {job.id[:8]} is a {job.kind}; /jobs retry finishes a short that failed.")
        if job.state != JobState.FAILED:
            raise UserInputError(f"Job {job.id[:8]} is {job.state}; only a failed short can be retried.")
        if not await asyncio.to_thread(short_dir(self.media_dir, job.id).is_dir):
            raise UserInputError(
                f"Short {job.id[:8]}'s files have been cleaned up after the retention period; please ask again."
            )
        payload = ShortPayload.model_validate_json(job.payload)
        clips = await self.clips_of(job.id)
        missing = [clip for clip in clips if not await asyncio.to_thread(_clip_made, clip)]
        missing_seconds = (
            sum(VideoPayload.model_validate_json(clip.payload).duration_seconds for clip in missing)
            if clips
            else payload.segments * MAX_CLIP_SECONDS
        )
        estimate = Decimal("0")
        if self.ledger is not None:
            estimate = self.ledger.cost(self.video_model, Usage(video_seconds=missing_seconds))
            for model, usage in short_estimate_usage(payload.segments, payload.voice is not None, service_config()):
                if usage.video_seconds == 0:
                    estimate += self.ledger.cost(model, usage)
        reservation = None
        if self.budgets is not None and self.ledger is not None:
            outcome = await self.budgets.reserve(
                job.user_key, payload.chat_key or f"{job.platform}:{job.chat_id}", estimate
            )
            if isinstance(outcome, BudgetRefusal):
                raise RetryRefused(outcome, estimate)
            reservation = outcome
        spent = await self.short_spent(job.id)
        retried = payload.model_copy(update={"reservation": reservation, "spent_before": spent})
        async with self._releasing_on_error(reservation), sessions().begin() as session:
            # The short first: of two retries at once, only one gets past here.
            result = await session.execute(
                update(JobRecord)
                .where(JobRecord.id == job.id, JobRecord.state == JobState.FAILED)
                .values(
                    state=JobState.QUEUED,
                    payload=retried.model_dump_json(),
                    error=None,
                    finished_at=None,
                    delivered_at=None,
                    lease_owner=self.owner,
                    lease_expires_at=utcnow() + self.lease,
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                raise UserInputError(f"Job {job.id[:8]} is already being retried.")
            for clip in missing:
                clip_payload = VideoPayload.model_validate_json(clip.payload).model_copy(update={"tries": 1})
                await session.execute(
                    update(JobRecord).where(JobRecord.id == clip.id).values(**_requeued(clip_payload))
                )
        return job, estimate

    async def find_users_job(self, user_key: str, job_ref: str) -> JobRecord:
        """A job of this user by id or unique id prefix (what /jobs shows)."""
        ref = job_ref.strip().lstrip("#").lower()
        if len(ref) < 4:
            raise UserInputError("Give at least the first 4 characters of the job id, as /jobs shows it.")
        async with sessions()() as session:
            rows = list(
                await session.scalars(
                    select(JobRecord).where(JobRecord.user_key == user_key, JobRecord.id.startswith(ref)).limit(2)
                )
            )
        if not rows:
            raise UserInputError(f"You have no job {ref}. /jobs lists yours.")
        if len(rows) > 1:
            raise UserInputError(f"{ref} matches several jobs; give more of the id.")
        return rows[0]

    async def cancel(self, user_key: str, job_ref: str) -> JobRecord:
        job = await self.find_users_job(user_key, job_ref)
        async with sessions().begin() as session:
            result = await session.execute(
                update(JobRecord)
                .where(JobRecord.id == job.id, JobRecord.state == JobState.QUEUED)
                .values(state=JobState.CANCELLED, finished_at=utcnow())
            )
        if getattr(result, "rowcount", 0) != 1:
            raise UserInputError(f"Job {job.id[:8]} is {job.state}; only a queued job can be cancelled.")
        await self._release_budget(job)
        return job

    async def result_for_resend(self, user_key: str, job_ref: str) -> JobOutcome:
        job = await self.find_users_job(user_key, job_ref)
        if job.result_path is None:
            raise UserInputError(f"Job {job.id[:8]} has no result to send ({job.state}).")
        path = Path(job.result_path)
        if not await asyncio.to_thread(path.is_file):
            raise UserInputError(f"Job {job.id[:8]}'s result has been cleaned up after the retention period.")
        return self._outcome(job, JobAddress(job.platform, job.chat_id, job.user_key))

    async def purge_media(self, older_than: timedelta) -> int:
        """Delete the result and input files of jobs that ended (succeeded, failed or cancelled)
        before the retention window; rows stay for /jobs. A short's clips go with their short (a
        retry needs them as long as it may be retried), never on their own. Returns how many files
        (or short folders) were removed."""
        cutoff = utcnow() - older_than
        async with sessions()() as session:
            rows = list(
                await session.execute(
                    select(JobRecord.id, JobRecord.result_path, JobRecord.input_path).where(
                        JobRecord.finished_at < cutoff,
                        JobRecord.parent_id.is_(None),
                        or_(JobRecord.result_path.is_not(None), JobRecord.input_path.is_not(None)),
                    )
                )
            )
        removed = 0
        for job_id, result_path, input_path in rows:
            paths = {self.media_dir / "inputs" / f"{job_id}.img"}
            if await asyncio.to_thread(remove_short_files, self.media_dir, job_id):
                removed += 1
                input_path = None  # the short's working folder, just removed
                for clip in await self.clips_of(job_id):
                    paths.update(Path(str(p)) for p in (clip.result_path, clip.input_path) if p is not None)
                    await self._set(clip.id, result_path=None, input_path=None)
            paths.update(Path(str(p)) for p in (result_path, input_path) if p is not None)
            for path in paths:
                if await asyncio.to_thread(_remove_file, path):
                    removed += 1
            await self._set(job_id, result_path=None, input_path=None)
        return removed


def _reservation_of(job: JobRecord) -> Reservation | None:
    try:
        stored = json.loads(job.payload).get("reservation")
        return Reservation.model_validate(stored) if stored else None
    except (ValueError, AttributeError, ValidationError):
        return None


class LeaseLost(Exception):
    """Another process holds this job now: this one leaves it alone, changing and delivering nothing."""


class RetryRefused(ReelwrightError):
    """A retry whose missing clips the budget cannot cover; nothing was queued."""

    def __init__(self, refusal: BudgetRefusal, estimate: Decimal) -> None:
        super().__init__(f"retry refused by the {refusal.scope} {refusal.period} budget")
        self.refusal = refusal
        self.estimate = estimate


def _requeued(payload: VideoPayload) -> dict[str, Any]:
    """A clip's row made ready to be made anew (nothing of its last attempt kept), with ``payload``."""
    return {
        "state": JobState.QUEUED,
        "payload": payload.model_dump_json(),
        "operation_name": None,
        "error": None,
        "submitted_at": None,
        "finished_at": None,
        "delivered_at": None,
        "result_path": None,
    }


async def _read_input(path: str | None) -> bytes | None:
    """The image a job kept with ``_keep_input``; None for a job without one."""
    return await asyncio.to_thread(Path(path).read_bytes) if path else None


def _clip_made(clip: JobRecord) -> bool:
    """A clip that was made and whose file is still there: a retry keeps it."""
    done = clip.state in (JobState.SUCCEEDED, JobState.DELIVERED)
    return done and clip.result_path is not None and Path(clip.result_path).is_file()


def _segment_of(job: JobRecord) -> int:
    try:
        return int(json.loads(job.payload).get("segment") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def _view(job: JobRecord, clips: list[JobView] | None = None) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        state=job.state,
        summary=_caption(job),
        created_at=as_utc(job.created_at) or utcnow(),
        finished_at=as_utc(job.finished_at),
        delivered_at=as_utc(job.delivered_at),
        error=job.error,
        cost=job.cost,
        has_result=job.result_path is not None,
        clips=clips or [],
    )


def _caption(job: JobRecord) -> str:
    try:
        data = json.loads(job.payload)
    except ValueError:
        return f"{job.kind} job"
    if job.kind == SHORT_KIND:
        voice = data.get("voice") or "no narration"
        return f"🎞️ short · {data.get('segments', '?')} segments · {data.get('aspect', '?')} · {voice} · {str(data.get('idea', ''))[:50]}"
    if job.kind == CLIP_KIND:
        tries = f" · try {data.get('tries')}" if int(data.get("tries") or 1) > 1 else ""
        return f"clip {data.get('segment', '?')} · {data.get('duration_seconds', '?')} s{tries}"
    if job.kind == "video":
        text = str(data.get("prompt", ""))
        return f"🎬 {data.get('duration_seconds', '?')} s · {data.get('aspect_ratio', '?')} · {text[:60]}"
    return f"🖼️ {str(data.get('title', ''))[:60]}"


def _remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
