"""The usage ledger: every paid call's real usage and cost, per user, chat/guild and day.

Writes are buffered and flushed in batches (one INSERT per command would cost more CPU than the
command itself under load), except a durable job's, which are written with its result (``record_with``): a
crash then loses no paid video. This month's totals for every user and chat are loaded with one
grouped query and refreshed every ``refresh_every`` seconds, and kept current in memory between
refreshes, so reading a total costs no query. Budgets are enforced by reservations on top of these
totals (``services.budgets``), shared through Redis when several processes run. Costs are exact
decimals, stored as whole micro-dollars. Periods are UTC days and UTC months.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.database import sessions
from services.metrics import record_spend
from services.pricing import PriceTable
from services.store.models import UsageRecord, utcnow
from services.usage import Usage

log = logging.getLogger(__name__)


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_day(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


@dataclass(frozen=True)
class Spend:
    today: Decimal
    this_month: Decimal


class UsageLedger:
    def __init__(self, prices: PriceTable, *, flush_every: float = 1.0, refresh_every: float = 30.0) -> None:
        self.prices = prices
        self.flush_every = flush_every
        self.refresh_every = refresh_every
        self._pending: list[dict[str, Any]] = []
        self._totals: dict[tuple[str, str], list[Decimal]] = {}
        self._period: tuple[datetime, datetime] | None = None
        self._refreshed_at = float("-inf")
        self._lock = asyncio.Lock()

    def cost(self, model: str, usage: Usage) -> Decimal:
        return self.prices.cost(model, usage)

    def record(self, *, user_key: str, chat_key: str, command: str, model: str, usage: Usage) -> Decimal:
        """Account one paid call now (in memory); it reaches the database at the next flush."""
        row = self._row(user_key, chat_key, command, model, usage)
        self._pending.append(row)
        self._count(row)
        cost: Decimal = row["cost"]
        return cost

    async def record_with(
        self,
        entries: Sequence[tuple[str, Usage]],
        write: Callable[[AsyncSession, Decimal], Awaitable[None]],
        *,
        user_key: str,
        chat_key: str,
        command: str,
    ) -> Decimal:
        """Account paid calls (model, usage) in the database at once, in one transaction with ``write``
        (given the session and their total cost): the job row that says what they made. A crash then
        keeps both or neither, so a paid result never outlives its usage, and a job resumed after the
        crash never accounts a second time what it paid once. Returns the total cost."""
        rows = [self._row(user_key, chat_key, command, model, usage) for model, usage in entries]
        total = sum((row["cost"] for row in rows), Decimal("0"))
        async with self._lock:  # a refresh reads the totals either before this commits or after it counted
            async with sessions().begin() as session:
                if rows:
                    await session.execute(insert(UsageRecord), rows)
                await write(session, total)
            for row in rows:
                self._count(row)
        return total

    def _row(self, user_key: str, chat_key: str, command: str, model: str, usage: Usage) -> dict[str, Any]:
        # Plain rows, inserted in batches with one executemany: building ORM objects per call
        # costs more than the rest of the accounting.
        return {
            "user_key": user_key,
            "chat_key": chat_key,
            "command": command,
            "model": model,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "video_seconds": usage.video_seconds,
            "images": usage.images,
            "cost": self.cost(model, usage),
            "created_at": utcnow(),
        }

    def _count(self, row: dict[str, Any]) -> None:
        self._add(row["user_key"], row["chat_key"], row["cost"])
        model = str(row["model"])
        record_spend("openrouter" if "/" in model else "google", float(row["cost"]))

    def _add(self, user_key: str, chat_key: str, cost: Decimal) -> None:
        for slot in (("user", user_key), ("chat", chat_key)):
            totals = self._totals.setdefault(slot, [Decimal("0"), Decimal("0")])
            totals[0] += cost
            totals[1] += cost

    async def spent(self, kind: str, key: str, now: datetime | None = None) -> Spend:
        """Today's and this month's spend: from memory, refreshed from the database periodically
        (one grouped query for everyone), so a budget check costs no query per command."""
        now = now or utcnow()
        await self.ensure_fresh(now)
        return self.current(kind, key)

    async def ensure_fresh(self, now: datetime) -> None:
        """Reload the totals when the period changed or the last refresh is too old."""
        period = (day_start(now), month_start(now))
        if self._period != period or time.monotonic() - self._refreshed_at > self.refresh_every:
            await self.refresh(now)

    def current(self, kind: str, key: str) -> Spend:
        """The in-memory totals as they are now, with no await: callers that check and then act
        on them (budget reservations) stay atomic within the event loop."""
        today, month = self._totals.get((kind, key), (Decimal("0"), Decimal("0")))
        return Spend(today=today, this_month=month)

    async def refresh(self, now: datetime | None = None) -> None:
        """Reload this month's totals per user and chat (what other processes spent included)."""
        now = now or utcnow()
        async with self._lock:
            self._refreshed_at = time.monotonic()
            await self._flush_locked()
            day, month = day_start(now), month_start(now)
            cost = UsageRecord.cost
            today_cost = case((UsageRecord.created_at >= day, cost), else_=Decimal(0))
            totals: dict[tuple[str, str], list[Decimal]] = {}
            async with sessions()() as session:
                for kind, column in (("user", UsageRecord.user_key), ("chat", UsageRecord.chat_key)):
                    rows = await session.execute(
                        select(column, func.sum(today_cost), func.sum(cost))
                        .where(UsageRecord.created_at >= month)
                        .group_by(column)
                    )
                    for key, today, this_month in rows:
                        totals[(kind, key)] = [_decimal(today), _decimal(this_month)]
            self._totals = totals
            self._period = (day, month)
            for row in self._pending:
                self._add(row["user_key"], row["chat_key"], row["cost"])

    async def top_users(self, chat_key: str, since: datetime, limit: int = 5) -> list[tuple[str, Decimal]]:
        await self.flush()
        async with sessions()() as session:
            rows = await session.execute(
                select(UsageRecord.user_key, func.sum(UsageRecord.cost))
                .where(UsageRecord.chat_key == chat_key, UsageRecord.created_at >= since)
                .group_by(UsageRecord.user_key)
                .order_by(func.sum(UsageRecord.cost).desc())
                .limit(limit)
            )
            return [(user, _decimal(total)) for user, total in rows]

    async def flush(self) -> int:
        async with self._lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            async with sessions().begin() as session:
                await session.execute(insert(UsageRecord), batch)
        except Exception:
            self._pending[:0] = batch
            raise
        return len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``flush_every`` seconds until ``stop``; a last flush at the end."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.flush_every)
            try:
                await self.flush()
            except Exception:
                log.exception("flushing usage records failed; will retry")


def _decimal(value: Decimal | None) -> Decimal:
    """A sum from the database (None when there are no rows), in whole micro-dollars."""
    return (value or Decimal(0)).quantize(Decimal("0.000001"))
