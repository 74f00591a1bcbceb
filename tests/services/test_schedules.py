"""Scheduled trend posts: one post per slot across processes, DST days, grace, retries."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from connectors.errors import UserInputError
from services.schedules import ScheduleService, ScheduleView, TrendScheduler, latest_slot, slot_instant, slot_key
from services.trends import TrendReport
from tests.fakes import FakeGenAI, FakeOpenRouter

Upstreams = tuple[FakeOpenRouter, FakeGenAI]
BERLIN = ZoneInfo("Europe/Berlin")


def view(at: str = "02:30", zone: str = "Europe/Berlin") -> ScheduleView:
    return ScheduleView(id=1, platform="telegram", chat_id="-100", niche="cooking", time_of_day=at, timezone=zone)


def berlin(day: str, hh: int, mm: int) -> datetime:
    return datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}").replace(tzinfo=BERLIN).astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "days"),
    [
        ("Europe/Berlin", ("2026-03-27", "2026-04-01")),  # spring forward on 29 March: 02:30 does not exist
        ("Europe/Berlin", ("2026-10-23", "2026-10-28")),  # fall back on 25 October: 02:30 happens twice
        ("America/New_York", ("2026-10-30", "2026-11-04")),  # fall back on 1 November
    ],
)
def test_one_slot_per_local_day_across_dst_changes(zone: str, days: tuple[str, str]) -> None:
    """Walk minute by minute through the DST week: each local day yields exactly one slot key."""
    schedule = view("02:30", zone)
    start = datetime.fromisoformat(days[0]).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    end = datetime.fromisoformat(days[1]).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    keys: dict[str, datetime] = {}
    moment = start
    while moment < end:
        key, instant = latest_slot(schedule, moment)
        keys.setdefault(key, instant)
        assert instant <= moment
        moment += timedelta(minutes=10)
    local_days = sorted({k[:10] for k in keys})
    assert len(keys) == len(local_days)  # never two slots on one local day
    instants = sorted(keys.values())
    gaps = {(b - a) for a, b in itertools.pairwise(instants)}
    assert gaps <= {timedelta(hours=23), timedelta(hours=24), timedelta(hours=25)}


def test_the_missing_spring_forward_time_posts_an_hour_later_in_wall_time() -> None:
    instant = slot_instant(date(2026, 3, 29), time(2, 30), BERLIN)
    assert instant == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert slot_key(date(2026, 3, 29), time(2, 30)) == "2026-03-29T02:30"


@pytest.fixture
async def service(database: str, upstreams: Upstreams) -> ScheduleService:
    return ScheduleService(grace=timedelta(hours=1))


async def test_add_list_remove_and_validation(service: ScheduleService) -> None:
    added = await service.add("telegram", "-100", "indie game dev", "9:05", "Europe/Berlin", "telegram:1")
    assert added.time_of_day == "09:05" and added.timezone == "Europe/Berlin"
    assert [v.id for v in await service.for_chat("telegram", "-100")] == [added.id]
    assert await service.for_chat("telegram", "-200") == []
    for bad_time in ("25:00", "9.30", "noon"):
        with pytest.raises(UserInputError, match="HH:MM"):
            await service.add("telegram", "-100", "x", bad_time, "UTC", "u")
    with pytest.raises(UserInputError, match="time zone"):
        await service.add("telegram", "-100", "x", "09:00", "Mars/Olympus", "u")
    with pytest.raises(UserInputError):
        await service.add("telegram", "-100", "   ", "09:00", "UTC", "u")
    with pytest.raises(UserInputError, match="no schedule"):
        await service.remove("telegram", "-200", added.id)
    await service.remove("telegram", "-100", added.id)
    assert await service.for_chat("telegram", "-100") == []


async def test_a_niche_is_stored_without_characters_the_store_cannot_hold(service: ScheduleService) -> None:
    added = await service.add("telegram", "-100", "cook\x00ing\x1b 👩\u200d🍳\ufffe", "09:00", "UTC", "u")
    assert added.niche == "cooking 👩\u200d🍳"
    assert [v.niche for v in await service.for_chat("telegram", "-100")] == ["cooking 👩\u200d🍳"]


class Clock:
    """The schedulers' time, set by the test (slots are days apart; waiting is not an option)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    def __init__(self, fail_first: set[int] | None = None) -> None:
        self.posts: list[tuple[int, str]] = []
        self.fail_first = set(fail_first or ())

    async def __call__(self, view: ScheduleView, report: TrendReport) -> None:
        if view.id in self.fail_first:
            self.fail_first.discard(view.id)
            raise ConnectionError("platform down")
        self.posts.append((view.id, report.niche))


async def test_two_processes_one_slot_one_post(service: ScheduleService, upstreams: Upstreams) -> None:
    text, _ = upstreams
    added = await service.add("telegram", "-100", "cooking", "09:30", "Europe/Berlin", "u")
    recorder = Recorder()
    clock = Clock(berlin("2031-01-10", 9, 31))
    first = TrendScheduler(ScheduleService(clock=clock), recorder)
    second = TrendScheduler(ScheduleService(clock=clock), recorder)
    await first.reconcile()
    await second.reconcile()
    await first.fire(added.id)  # the cron trigger firing too changes nothing
    clock.now += timedelta(days=1, hours=3)
    await first.fire(added.id)  # nor a stray fire long after a slot: past the grace time it is skipped
    await first.idle()
    await second.idle()
    assert recorder.posts == [(added.id, "cooking")]
    assert len(text.chat_requests) == 1


async def test_a_missed_slot_posts_within_grace_and_is_skipped_after(service: ScheduleService) -> None:
    within = await service.add("telegram", "-1", "within", "09:00", "Europe/Berlin", "u")
    late = await service.add("telegram", "-2", "late", "06:00", "Europe/Berlin", "u")
    recorder = Recorder()
    clock = Clock(berlin("2031-01-10", 9, 40))  # 40 min after 09:00, 3 h 40 after 06:00
    scheduler = TrendScheduler(ScheduleService(grace=timedelta(hours=1), clock=clock), recorder)
    await scheduler.reconcile()
    await scheduler.idle()
    assert recorder.posts == [(within.id, "within")]
    clock.now += timedelta(minutes=5)
    await scheduler.reconcile()
    await scheduler.idle()
    assert recorder.posts == [(within.id, "within")]  # the skipped slot is not posted later either
    assert late.id not in [p[0] for p in recorder.posts]


async def test_a_failing_slot_is_retried_and_never_blocks_others(service: ScheduleService) -> None:
    a = await service.add("telegram", "-1", "alpha", "09:00", "Europe/Berlin", "u")
    b = await service.add("telegram", "-2", "beta", "09:00", "Europe/Berlin", "u")
    recorder = Recorder(fail_first={a.id})
    clock = Clock(berlin("2031-01-10", 9, 1))
    scheduler = TrendScheduler(ScheduleService(clock=clock), recorder)
    await scheduler.reconcile()
    await scheduler.idle()
    assert recorder.posts == [(b.id, "beta")]
    clock.now += timedelta(seconds=5)  # inside the backoff: not yet
    await scheduler.reconcile()
    await scheduler.idle()
    assert recorder.posts == [(b.id, "beta")]
    clock.now += timedelta(minutes=2)
    await scheduler.reconcile()
    await scheduler.idle()
    assert sorted(recorder.posts) == sorted([(a.id, "alpha"), (b.id, "beta")])


async def test_a_new_schedule_does_not_post_the_slot_that_already_passed(service: ScheduleService) -> None:
    recorder = Recorder()
    clock = Clock(berlin("2031-01-10", 9, 10))
    service.clock = clock
    scheduler = TrendScheduler(service, recorder)
    await service.add("telegram", "-1", "x", "09:00", "Europe/Berlin", "u")
    await scheduler.reconcile()
    await scheduler.idle()
    assert recorder.posts == []
