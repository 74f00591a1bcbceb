"""Commands that run as durable jobs (/video, /thumbnail, /short) and /jobs, on top of services.jobs.

In the embedded setup the job runs in this process and the command waits for it, showing
progress, and delivers the result itself (marking the job delivered afterwards). A video still
rendering at the deadline ends the wait with a "late, will follow" answer; the job goes on and
its result is posted through the platform's ChatSender. With a Redis queue a worker runs it and
delivers through the ChatSender; the command answers at once that the job is queued. Either way,
after a crash the job resumes and is delivered once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bot.core.context import CommandContext
from bot.core.guards import refused_by_budget
from bot.core.rendering import money_text, short_progress_text, story_blocks, video_progress_text
from bot.core.replies import Media, Reply
from bot.core.storyboard import STORYBOARD_MIME, frames_sheet_or_none
from connectors.errors import UserInputError
from services.config import service_config
from services.jobs import JobAddress, JobLate, JobOutcome, JobService, JobView, RetryRefused, as_utc
from services.queue import JobExecutor, JobQueue
from services.shorts import SHORT_KIND, ShortManifest, ShortProgress
from services.store.models import JobRecord, JobState
from services.story import Story
from services.video import VideoProgress, duration_text

log = logging.getLogger(__name__)

STATE_ICONS = {
    "queued": "⏳",
    "submitting": "📤",
    "running": "🎞️",
    "succeeded": "✅",
    "failed": "⚠️",
    "delivered": "📬",
    "cancelled": "✖️",
}
WAIT_CHECK_SECONDS = 30.0
#: Posts a reply to a chat known by platform and id (``ChatSenders.post``).
PostToChat = Callable[[str, str, Reply], Awaitable[None]]
SHORT_FILENAME = "short.mp4"
FRAMES_SHEET_FILENAME = "clips.jpg"


async def outcome_reply(outcome: JobOutcome, *, sheet_shown: bool = False) -> Reply:
    """The chat reply for a finished job: its media read from MEDIA_DIR, or its error.
    ``sheet_shown``: a short's first-frames sheet was already posted while it was being made."""
    if not outcome.ok or outcome.media_path is None:
        return Reply.error(outcome.error or "The job failed.")
    if outcome.kind == SHORT_KIND:
        return await short_reply(outcome.media_path, with_sheet=not sheet_shown)
    data = await asyncio.to_thread(outcome.media_path.read_bytes)
    kind: Literal["video", "image"] = "video" if outcome.kind == "video" else "image"
    media = Media(kind, data, outcome.media_path.name, outcome.caption, outcome.mime_type or "application/octet-stream")
    return Reply(blocks=[outcome.caption], media=[media])


async def short_reply(manifest_path: Path, *, with_sheet: bool = True) -> Reply:
    """A finished short as creators post it: the MP4 first, then the thumbnail, the sheet of each
    clip's first frame beside its narration (``with_sheet``), the copy to paste and the captions as
    an .srt file."""
    text = await asyncio.to_thread(manifest_path.read_text, encoding="utf-8")
    manifest = ShortManifest.model_validate_json(text)
    story = manifest.story
    caption = f"🎞️ {story.title} · {manifest.duration:.0f} s"
    media = [Media("video", await _read(manifest.video), SHORT_FILENAME, caption, "video/mp4")]
    if manifest.thumbnail:
        media.append(
            Media(
                "image",
                await _read(manifest.thumbnail),
                Path(manifest.thumbnail).name,
                "🖼️ Thumbnail",
                manifest.thumbnail_mime or "image/png",
            )
        )
    if with_sheet:
        sheet = await frames_sheet_media(story, manifest.frames)
        if sheet is not None:
            media.append(sheet)
    media.append(
        Media("document", await _read(manifest.srt), "short.srt", "💬 Captions (.srt)", "application/x-subrip")
    )
    blocks = [caption]
    if manifest.copy_text:
        blocks.append(f"📝 Ready to post:\n{manifest.copy_text}")
    blocks.extend(f"ℹ️ {note}" for note in manifest.notes)
    return Reply(blocks=blocks, media=media)


async def _read(path: str) -> bytes:
    return await asyncio.to_thread(Path(path).read_bytes)


def _read_frames(paths: list[str | None]) -> list[bytes | None]:
    frames: list[bytes | None] = []
    for path in paths:
        try:
            frames.append(Path(path).read_bytes() if path else None)
        except OSError:
            frames.append(None)
    return frames


async def frames_sheet_media(story: Story, frame_paths: list[str | None]) -> Media | None:
    """The sheet of each clip's first frame beside its narration; None when it cannot be drawn."""
    frames = await asyncio.to_thread(_read_frames, frame_paths)
    sheet = await frames_sheet_or_none(story, frames)
    if sheet is None:
        return None
    return Media("image", sheet, FRAMES_SHEET_FILENAME, "🎞️ Your clips, first frame by first frame", STORYBOARD_MIME)


def late_reply(job_id: str, elapsed_seconds: float, kind: str = "video") -> Reply:
    """A video (or a short's clips) past the deadline: still being made, will be posted here, paid once."""
    what = "Short" if kind == SHORT_KIND else "Video"
    return Reply(
        blocks=[
            f"⏳ {what} job {job_id[:8]} is taking longer than usual ({duration_text(elapsed_seconds)} so far). "
            "It is still being made and will be posted here as soon as it's ready; you don't need to ask "
            f"again (it is paid once). /jobs shows it."
        ]
    )


def _late_by_row(job: JobRecord) -> float | None:
    """How long a video another process is running has been rendering, once past the deadline."""
    if job.kind not in ("video", SHORT_KIND) or job.state != JobState.RUNNING:
        return None
    submitted = as_utc(job.submitted_at or job.created_at)
    if submitted is None:
        return None
    elapsed = (datetime.now(UTC) - submitted).total_seconds()
    return elapsed if elapsed > service_config().video_deadline_seconds else None


def address_of(ctx: CommandContext) -> JobAddress:
    return JobAddress(platform=ctx.chat.platform, chat_id=ctx.chat.id, user_key=ctx.user.key, chat_key=ctx.chat_key)


class JobCommands:
    """Runs durable jobs for commands. ``post`` sends a short's story (and its storyboard) to the
    chat while its clips render."""

    def __init__(self, jobs: JobService, queue: JobQueue, executor: JobExecutor, post: PostToChat) -> None:
        self.jobs = jobs
        self.queue = queue
        self.executor = executor
        self.post = post

    async def run(self, job_id: str, ctx: CommandContext) -> Reply:
        """Enqueue the job; in-process, wait for it with progress and deliver it with this reply,
        or answer that it will follow when a video passes the deadline."""
        if not self.queue.in_process:
            await self.jobs.release(job_id)  # any worker may take it at once
            await self.queue.enqueue(job_id)
            return Reply(
                blocks=[f"⏳ Job {job_id[:8]} is queued. I'll post the result here when it's ready; /jobs shows it."],
                upstream_output=False,
            )

        async def progress(update: VideoProgress | ShortProgress) -> None:
            if isinstance(update, ShortProgress):
                await self._short_progress(update, ctx)
            else:
                await ctx.progress(video_progress_text(update), force=update.stage != "rendering")

        future = self.executor.watch(job_id, progress)
        try:
            await self.queue.enqueue(job_id)
            while True:
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(future), timeout=WAIT_CHECK_SECONDS)
                    break
                except TimeoutError:
                    job = await self.jobs.get(job_id)
                    if job is not None and job.delivered_at is not None:
                        return Reply(
                            blocks=[f"Job {job_id[:8]} was posted by another bot process."], upstream_output=False
                        )
                    if job is not None and job.state == JobState.CANCELLED:
                        return Reply(blocks=[f"Job {job_id[:8]} was cancelled."], upstream_output=False)
                    late = _late_by_row(job) if job is not None and job_id not in self.executor.running else None
                    if late is not None and job is not None:
                        return late_reply(job_id, late, job.kind)
        finally:
            self.executor.unwatch(job_id)
        if isinstance(outcome, JobLate):
            return late_reply(job_id, outcome.elapsed_seconds, outcome.kind)
        if outcome.kind == SHORT_KIND and outcome.ok:
            await ctx.progress("📤 Uploading your short…", force=True)
        reply = await outcome_reply(outcome, sheet_shown=True)

        async def delivered() -> None:
            await self.jobs.mark_delivered(job_id)

        reply.on_delivered = delivered
        return reply

    async def _short_progress(self, update: ShortProgress, ctx: CommandContext) -> None:
        await ctx.progress(short_progress_text(update), force=update.stage != "clips" or update.done == update.total)
        post: Reply | None = None
        if update.stage == "story" and update.story is not None:
            post = Reply(blocks=story_blocks(update.story, heading="🗂️"), result=update.story)
        elif update.stage == "stitching" and update.story is not None and update.frames:
            sheet = await frames_sheet_media(update.story, update.frames)
            post = Reply(blocks=[], media=[sheet]) if sheet is not None else None
        if post is not None:
            try:
                await self.post(ctx.chat.platform, ctx.chat.id, post)
            except Exception:
                log.warning("could not post the short's %s", update.stage, exc_info=True)

    async def retry(self, ctx: CommandContext, job_ref: str) -> Reply:
        """A failed short made whole: only its missing clips are paid for, after their reservation."""
        try:
            job, estimate = await self.jobs.retry(ctx.user.key, job_ref)
        except RetryRefused as refused:
            raise refused_by_budget(f"Retrying short {job_ref}", refused.estimate, refused.refusal) from None
        cost = f" (about {money_text(estimate)} for the missing clips)" if estimate > 0 else ""
        await ctx.progress(f"🔁 Retrying short {job.id[:8]}{cost}; what is already made is kept…", force=True)
        return await self.run(job.id, ctx)

    async def list_or_act(self, ctx: CommandContext) -> Reply:
        request = (ctx.args.get("request") or "list").split()
        action, rest = request[0].lower(), request[1:]
        if action == "retry":
            if not rest:
                raise UserInputError("Which short? /jobs retry <id> (the id as /jobs shows it).")
            return await self.retry(ctx, rest[0])
        if action in ("resend", "cancel"):
            if not rest:
                raise UserInputError(f"Which job? /jobs {action} <id> (the id as /jobs shows it).")
            if action == "cancel":
                job = await self.jobs.cancel(ctx.user.key, rest[0])
                return Reply(blocks=[f"✖️ Job {job.id[:8]} cancelled; nothing was paid for it."])
            outcome = await self.jobs.result_for_resend(ctx.user.key, rest[0])
            return await outcome_reply(outcome)
        if action != "list":
            raise UserInputError("Use /jobs, /jobs resend <id>, /jobs retry <id> or /jobs cancel <id>.")
        views = await self.jobs.list_jobs(ctx.user.key)
        if not views:
            return Reply(blocks=["You have no generation jobs yet. /short, /video and /thumbnail create them."])
        return Reply(blocks=["🧾 Your recent jobs:", *(job_line(view) for view in views)])


def job_line(view: JobView, now: datetime | None = None) -> str:
    age = _age((now or datetime.now(UTC)) - view.created_at)
    cost = f" · {money_text(view.cost)}" if view.cost else ""
    line = f"{STATE_ICONS.get(view.state, '•')} {view.id[:8]} · {view.state} · {age} ago{cost}\n   {view.summary}"
    if view.error:
        line += f"\n   {view.error}"
    for clip in view.clips:
        clip_cost = f" · {money_text(clip.cost)}" if clip.cost else ""
        line += f"\n   {STATE_ICONS.get(clip.state, '•')} {clip.summary} · {clip.state}{clip_cost}"
    if view.has_result:
        line += f"\n   /jobs resend {view.id[:8]}"
    if view.state == JobState.QUEUED:
        line += f"\n   /jobs cancel {view.id[:8]}"
    if view.kind == SHORT_KIND and view.state == JobState.FAILED:
        line += f"\n   /jobs retry {view.id[:8]}"
    return line


def _age(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
