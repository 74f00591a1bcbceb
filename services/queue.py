"""Job execution on taskiq: an in-memory broker in the bot's own process by default (nothing to
install), a Redis stream broker when REDIS_URL is set so that ``reelwright worker`` processes share
the work (unacknowledged messages are re-delivered after ``idle_timeout``).

taskiq was chosen over arq/Celery/Dramatiq because it is asyncio-native end to end, ships both an
in-memory broker (for the embedded default) and an acknowledging Redis stream broker, and runs a
worker programmatically. The queue only carries job ids: the job row is the source of truth, so a
message delivered twice is harmless (the row's lease and states decide what happens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from taskiq import AsyncBroker, InMemoryBroker

from services.jobs import JobLate, JobOutcome, JobProgress, JobService
from services.shorts import ShortProgress
from services.video import VideoProgress

log = logging.getLogger(__name__)

TASK_NAME = "reelwright.run_job"
Deliver = Callable[[JobOutcome], Awaitable[None]]
NotifyLate = Callable[[JobLate], Awaitable[None]]


@dataclass
class _Watcher:
    progress: JobProgress | None
    outcome: asyncio.Future[JobOutcome | JobLate]


@dataclass
class JobExecutor:
    """Runs one job id: the work, then delivery through ``deliver`` and the idempotency mark, unless
    an interactive command in this process is waiting for it (then that command delivers it).

    A video past the deadline ends the command's wait with a ``JobLate`` (the command answers that it
    will follow); with no command waiting, ``notify_late`` tells the chat. The work goes on either
    way, and its result is then delivered through ``deliver``.
    """

    jobs: JobService
    deliver: Deliver
    notify_late: NotifyLate | None = None
    watchers: dict[str, _Watcher] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[object]] = field(default_factory=set)

    async def execute(self, job_id: str) -> None:
        if job_id in self.running:
            return
        self.running.add(job_id)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._execute(job_id)
        finally:
            self.running.discard(job_id)
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        """Stop the jobs running in this process where they are (a shutdown, not a failure): their
        rows keep their state and lease, and the next process with this instance id resumes them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _waiting(self, job_id: str) -> _Watcher | None:
        """The interactive command still waiting for this job, if any."""
        watcher = self.watchers.get(job_id)
        return watcher if watcher is not None and not watcher.outcome.done() else None

    async def _execute(self, job_id: str) -> None:
        async def progress(update: VideoProgress | ShortProgress) -> None:
            watcher = self._waiting(job_id)
            if watcher is not None and watcher.progress is not None:
                await watcher.progress(update)

        async def late(notice: JobLate) -> None:
            watcher = self._waiting(job_id)
            if watcher is not None:
                watcher.outcome.set_result(notice)
            elif self.notify_late is not None:
                try:
                    await self.notify_late(notice)
                except Exception:
                    log.warning("could not tell the chat that job %s is late", job_id, exc_info=True)

        outcome = await self.jobs.run(job_id, progress=progress, on_late=late)
        if outcome is None:
            return
        watcher = self._waiting(job_id)
        if watcher is not None:
            watcher.outcome.set_result(outcome)
            return
        try:
            await self.deliver(outcome)
        except Exception:
            log.exception("delivering job %s failed; it stays undelivered and is retried later", job_id)
            await self.jobs.release(job_id)
            return
        await self.jobs.mark_delivered(job_id)

    def watch(self, job_id: str, progress: JobProgress | None) -> asyncio.Future[JobOutcome | JobLate]:
        future: asyncio.Future[JobOutcome | JobLate] = asyncio.get_running_loop().create_future()
        self.watchers[job_id] = _Watcher(progress, future)
        return future

    def unwatch(self, job_id: str) -> None:
        self.watchers.pop(job_id, None)


class JobQueue:
    def __init__(
        self,
        executor: JobExecutor,
        redis_url: str | None = None,
        *,
        max_concurrent: int = 200,
        queue_name: str = "reelwright:jobs",
    ) -> None:
        self.executor = executor
        self.redis_url = redis_url
        self.broker: AsyncBroker
        if redis_url:
            # Imported only here: it loads redis-py, which a bot without REDIS_URL never needs.
            from taskiq_redis import RedisStreamBroker

            self.broker = RedisStreamBroker(
                url=redis_url,
                queue_name=queue_name,
                consumer_group_name="reelwright",
                idle_timeout=120_000,
            )
        else:
            self.broker = InMemoryBroker(max_async_tasks=max_concurrent)

        async def run_job(job_id: str) -> None:
            await self.executor.execute(job_id)

        self._task = self.broker.register_task(run_job, task_name=TASK_NAME)
        self._worker: asyncio.Task[None] | None = None

    @property
    def in_process(self) -> bool:
        """True when jobs run in this process (the in-memory broker)."""
        return self.redis_url is None

    async def start(self) -> None:
        await self.broker.startup()

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await self.broker.shutdown()

    async def enqueue(self, job_id: str) -> None:
        await self._task.kiq(job_id)

    async def run_worker(self, max_async_tasks: int = 100) -> None:
        """Consume jobs from Redis in this process (``reelwright worker``) until cancelled."""
        from taskiq.api import run_receiver_task

        self.broker.is_worker_process = True
        await run_receiver_task(self.broker, max_async_tasks=max_async_tasks, run_startup=False)


@dataclass
class JobSweeper:
    """Keeps durable jobs moving: resumes every unfinished job nobody holds (after a crash, a restart
    or a lost worker), at once for those this instance's previous process held when it died, and
    removes media past retention about hourly."""

    jobs: JobService
    queue: JobQueue
    executor: JobExecutor
    started_at: datetime
    every_seconds: float
    retention: timedelta
    purge_every_seconds: float = 3600.0

    async def sweep(self) -> int:
        await self.jobs.reclaim_orphaned_leases(self.started_at)
        resumed = 0
        for job_id in await self.jobs.unfinished_job_ids():
            if job_id in self.executor.running or job_id in self.executor.watchers:
                continue
            await self.queue.enqueue(job_id)
            resumed += 1
        if resumed:
            log.info("resumed %d unfinished job(s)", resumed)
        return resumed

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now and every ``every_seconds``, purge about hourly, until ``stop`` is set."""
        last_purge = float("-inf")
        while not stop.is_set():
            try:
                await self.sweep()
                if time.monotonic() - last_purge > self.purge_every_seconds:
                    last_purge = time.monotonic()
                    removed = await self.jobs.purge_media(self.retention)
                    if removed:
                        log.info("removed %d media file(s) past retention", removed)
            except Exception:
                log.exception("job maintenance failed; will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_seconds)
