"""Scheduled trend posts: a channel subscribes to a niche at a local time in an IANA time zone.

APScheduler fires each schedule with a cron trigger in its own time zone; a reconcile job every
minute picks up schedules added or removed by other processes, posts a slot missed while the bot
was down if it is still within the grace window (older ones are recorded as skipped and logged),
and retries failed slots with backoff. Exactly once per slot, even with several bot processes:
a slot is claimed by inserting (schedule id, slot key) under a unique constraint, and the slot key
is the local date and time, so the repeated hour of a DST fall-back still posts once and the
missing hour of a spring-forward posts once, an hour later in wall-clock terms.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from connectors.database import sessions
from connectors.errors import ReelwrightError, UserInputError
from services.prompts import clean_prompt, storable
from services.store.models import SchedulePostRecord, ScheduleRecord, utcnow
from services.trends import TrendReport, generate_trending_ideas

log = logging.getLogger(__name__)

MAX_SCHEDULES_PER_CHAT = 10
MAX_ATTEMPTS = 5
RETRY_BASE_SECONDS = 30.0
CLAIM_LEASE = timedelta(minutes=5)
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class ScheduleView:
    id: int
    platform: str
    chat_id: str
    niche: str
    time_of_day: str
    timezone: str


PostTrends = Callable[[ScheduleView, TrendReport], Awaitable[None]]


def parse_time_of_day(value: str) -> time:
    match = _TIME.match(value.strip())
    if not match:
        raise UserInputError(f"{value!r} is not a time; use 24-hour HH:MM, e.g. 09:30.")
    return time(int(match.group(1)), int(match.group(2)))


#: Files in the time-zone database that are no place: ``localtime`` is whatever zone this server
#: runs in (it would silently move with the server), ``Factory`` and ``posixrules`` are tooling.
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def _iana_zone_names() -> frozenset[str]:
    return frozenset(available_timezones() - _NOT_PLACES)


def parse_timezone(value: str) -> ZoneInfo:
    """An IANA time zone by name (Europe/Berlin, UTC); anything else is refused with an example."""
    name = value.strip()
    if name not in _iana_zone_names():
        raise UserInputError(
            f"{value!r} is not a time zone I know; use an IANA name such as Europe/Berlin or America/New_York."
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserInputError(f"The time zone {name} cannot be read on this server.") from None


def slot_key(local_day: date, at: time) -> str:
    """The wall-clock slot, the same whatever DST does to that day."""
    return f"{local_day.isoformat()}T{at.strftime('%H:%M')}"


def slot_instant(local_day: date, at: time, zone: ZoneInfo) -> datetime:
    """When a slot happens: a skipped wall time (spring forward) resolves forward by the gap."""
    naive = datetime.combine(local_day, at)
    instant = naive.replace(tzinfo=zone).astimezone(UTC)
    return instant


def latest_slot(view: ScheduleView, now: datetime) -> tuple[str, datetime]:
    """The most recent slot at or before ``now`` and its instant."""
    zone = ZoneInfo(view.timezone)
    at = parse_time_of_day(view.time_of_day)
    local_today = now.astimezone(zone).date()
    for day in (local_today, local_today - timedelta(days=1)):
        instant = slot_instant(day, at, zone)
        if instant <= now:
            return slot_key(day, at), instant
    day = local_today - timedelta(days=2)
    return slot_key(day, at), slot_instant(day, at, zone)


def _view(record: ScheduleRecord) -> ScheduleView:
    return ScheduleView(
        id=record.id,
        platform=record.platform,
        chat_id=record.chat_id,
        niche=record.niche,
        time_of_day=record.time_of_day,
        timezone=record.timezone,
    )


class ScheduleService:
    def __init__(
        self,
        *,
        owner: str | None = None,
        grace: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.owner = owner or uuid.uuid4().hex
        self.grace = grace
        self.clock = clock

    async def add(
        self, platform: str, chat_id: str, niche: str, at: str, timezone: str, created_by: str
    ) -> ScheduleView:
        niche = clean_prompt(niche, what="niche", max_chars=200)
        when = parse_time_of_day(at)
        zone = parse_timezone(timezone)
        async with sessions().begin() as session:
            count = len(
                list(
                    await session.scalars(
                        select(ScheduleRecord.id).where(
                            ScheduleRecord.platform == platform, ScheduleRecord.chat_id == chat_id
                        )
                    )
                )
            )
            if count >= MAX_SCHEDULES_PER_CHAT:
                raise UserInputError(f"This chat already has {count} schedules; remove one first.")
            record = ScheduleRecord(
                platform=platform,
                chat_id=chat_id,
                niche=niche,
                time_of_day=when.strftime("%H:%M"),
                timezone=zone.key,
                created_by=created_by,
            )
            session.add(record)
            await session.flush()
            # A new schedule starts with the next slot: the one that already passed today is not "missed".
            key, _ = latest_slot(_view(record), self.clock())
            session.add(
                SchedulePostRecord(
                    schedule_id=record.id, slot=key, state="before-start", owner=self.owner, claimed_at=self.clock()
                )
            )
            return _view(record)

    async def for_chat(self, platform: str, chat_id: str) -> list[ScheduleView]:
        async with sessions()() as session:
            rows = await session.scalars(
                select(ScheduleRecord)
                .where(ScheduleRecord.platform == platform, ScheduleRecord.chat_id == chat_id)
                .order_by(ScheduleRecord.id)
            )
            return [_view(row) for row in rows]

    async def all(self) -> list[ScheduleView]:
        async with sessions()() as session:
            return [_view(row) for row in await session.scalars(select(ScheduleRecord).order_by(ScheduleRecord.id))]

    async def remove(self, platform: str, chat_id: str, schedule_id: int) -> None:
        async with sessions().begin() as session:
            result = await session.execute(
                delete(ScheduleRecord).where(
                    ScheduleRecord.id == schedule_id,
                    ScheduleRecord.platform == platform,
                    ScheduleRecord.chat_id == chat_id,
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                raise UserInputError(f"This chat has no schedule {schedule_id}. /schedule list shows them.")
            await session.execute(delete(SchedulePostRecord).where(SchedulePostRecord.schedule_id == schedule_id))

    async def claim(self, schedule_id: int, slot: str, state: str = "claimed") -> bool:
        """Insert the slot's row; only one process (and one call) ever succeeds for a slot."""
        try:
            async with sessions().begin() as session:
                session.add(
                    SchedulePostRecord(
                        schedule_id=schedule_id, slot=slot, state=state, owner=self.owner, claimed_at=self.clock()
                    )
                )
        except IntegrityError:
            return False
        return True

    async def reclaim_for_retry(self, now: datetime) -> list[tuple[int, str]]:
        """Failed slots whose backoff has passed, and claims abandoned by a dead process."""
        async with sessions()() as session:
            rows = list(
                await session.execute(
                    select(SchedulePostRecord.id, SchedulePostRecord.schedule_id, SchedulePostRecord.slot).where(
                        or_(
                            and_(SchedulePostRecord.state == "failed", SchedulePostRecord.attempts < MAX_ATTEMPTS),
                            and_(
                                SchedulePostRecord.state == "claimed", SchedulePostRecord.claimed_at < now - CLAIM_LEASE
                            ),
                        )
                    )
                )
            )
        taken: list[tuple[int, str]] = []
        for row_id, schedule_id, slot in rows:
            async with sessions().begin() as session:
                record = await session.get(SchedulePostRecord, row_id)
                if record is None:
                    continue
                backoff = timedelta(seconds=RETRY_BASE_SECONDS * 2 ** max(0, record.attempts - 1))
                claimed_at = record.claimed_at if record.claimed_at.tzinfo else record.claimed_at.replace(tzinfo=UTC)
                if record.state == "failed" and claimed_at + backoff > now:
                    continue
                result = await session.execute(
                    update(SchedulePostRecord)
                    .where(
                        SchedulePostRecord.id == row_id,
                        SchedulePostRecord.state == record.state,
                        SchedulePostRecord.attempts == record.attempts,
                    )
                    .values(state="claimed", owner=self.owner, claimed_at=now)
                )
                if getattr(result, "rowcount", 0) == 1:
                    taken.append((schedule_id, slot))
        return taken

    async def finish(self, schedule_id: int, slot: str, error: str | None) -> None:
        values: dict[str, object] = (
            {"state": "posted", "posted_at": self.clock(), "error": None}
            if error is None
            else {"state": "failed", "error": storable(error)[:500], "claimed_at": self.clock()}
        )
        async with sessions().begin() as session:
            await session.execute(
                update(SchedulePostRecord)
                .where(SchedulePostRecord.schedule_id == schedule_id, SchedulePostRecord.slot == slot)
                .values(attempts=SchedulePostRecord.attempts + 1, **values)
            )

    async def get(self, schedule_id: int) -> ScheduleView | None:
        async with sessions()() as session:
            record = await session.get(ScheduleRecord, schedule_id)
            return _view(record) if record else None


class TrendScheduler:
    """Fires schedules with APScheduler and posts each slot once through ``post``."""

    def __init__(self, service: ScheduleService, post: PostTrends, *, reconcile_seconds: float = 60.0) -> None:
        self.service = service
        self.post = post
        self.reconcile_seconds = reconcile_seconds
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._known: dict[int, ScheduleView] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            self.reconcile, "interval", seconds=self.reconcile_seconds, id="reconcile", max_instances=1, coalesce=True
        )
        await self.reconcile()

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def reconcile(self) -> None:
        """Sync cron jobs with the database, then post due, missed (within grace) and retried slots."""
        now = self.service.clock()
        schedules = {view.id: view for view in await self.service.all()}
        for gone in set(self._known) - set(schedules):
            if self.scheduler.get_job(f"schedule-{gone}"):
                self.scheduler.remove_job(f"schedule-{gone}")
        for view in schedules.values():
            if view.id not in self._known:
                at = parse_time_of_day(view.time_of_day)
                self.scheduler.add_job(
                    self.fire,
                    CronTrigger(hour=at.hour, minute=at.minute, timezone=ZoneInfo(view.timezone)),
                    args=[view.id],
                    id=f"schedule-{view.id}",
                    replace_existing=True,
                    misfire_grace_time=int(self.service.grace.total_seconds()),
                    coalesce=True,
                )
        self._known = schedules
        for view in schedules.values():
            key, instant = latest_slot(view, now)
            if now - instant <= self.service.grace:
                if await self.service.claim(view.id, key):
                    await self._post(view, key)
            elif await self.service.claim(view.id, key, state="skipped"):
                log.warning("schedule %s: slot %s was missed while down (over the grace window); skipped", view.id, key)
        for schedule_id, slot in await self.service.reclaim_for_retry(now):
            retry_view = schedules.get(schedule_id)
            if retry_view is not None:
                await self._post(retry_view, slot)

    async def fire(self, schedule_id: int) -> None:
        """The cron trigger's callback: post the slot that is due now, if nobody has."""
        view = await self.service.get(schedule_id)
        if view is None:
            return
        now = self.service.clock()
        key, instant = latest_slot(view, now)
        if now - instant <= self.service.grace and await self.service.claim(view.id, key):
            await self._post(view, key)

    async def _post(self, view: ScheduleView, slot: str) -> None:
        """Generate and post in its own task so one slow or failing slot never blocks the others."""
        task = asyncio.create_task(self._post_now(view, slot))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _post_now(self, view: ScheduleView, slot: str) -> None:
        try:
            report = await generate_trending_ideas(view.niche)
            await self.post(view, report)
        except ReelwrightError as exc:
            log.warning("schedule %s slot %s failed (will retry): %s", view.id, slot, exc)
            await self.service.finish(view.id, slot, str(exc))
        except Exception as exc:
            log.exception("schedule %s slot %s failed (will retry)", view.id, slot)
            await self.service.finish(view.id, slot, f"{type(exc).__name__}: {exc}")
        else:
            await self.service.finish(view.id, slot, None)

    async def idle(self) -> None:
        """Wait for every post in flight (tests and shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
