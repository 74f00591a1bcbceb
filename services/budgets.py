"""Budget reservations: a paid command reserves its estimate against every budget that applies
(user and chat, UTC day and month) before the paid call, in one atomic step, then settles it to the
real cost or releases it when nothing was spent. Checking first and recording afterwards lets
concurrent commands all pass the check and all pay; holding the estimate up front does not.

Two books with one interface:

* ``LocalBudgets`` (one process): spend comes from the usage ledger's in-memory totals, the held
  estimates sit beside them, and the check and the hold run with no ``await`` between them, which
  makes them one step for every other coroutine. No query per command.
* ``RedisBudgets`` (REDIS_URL, any number of bot and worker processes): one Redis counter per
  budget and period holds spent + reserved in micro-dollars. One Lua script checks all four
  counters and adds to all four, or to none. A counter Redis does not have (first use in a period,
  or Redis restarted) starts from the usage ledger's totals, passed with every call.

Reservations taken over by a durable job travel in the job's payload: the job settles or releases
them, and ``hold`` re-establishes one (without a check: that money is already committed) when a
restarted process resumes the job.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel

from connectors.redis_client import redis_client
from services.ledger import UsageLedger, day_start, month_start, next_day, next_month
from services.store.models import utcnow

log = logging.getLogger(__name__)

MICRO = Decimal(1_000_000)
COUNTER_TTL_SECONDS = {"day": 3 * 86_400, "month": 40 * 86_400}
RESERVATION_TTL_SECONDS = 2 * 86_400
Scope = Literal["user", "chat"]
Period = Literal["day", "month"]


@dataclass(frozen=True)
class BudgetLimits:
    """Limits in US dollars; 0 means no limit for that budget."""

    user_daily: Decimal = Decimal("0")
    user_monthly: Decimal = Decimal("0")
    chat_daily: Decimal = Decimal("0")
    chat_monthly: Decimal = Decimal("0")

    def slots(self, user_key: str, chat_key: str) -> list[tuple[Scope, str, Period, Decimal]]:
        return [
            ("user", user_key, "day", self.user_daily),
            ("user", user_key, "month", self.user_monthly),
            ("chat", chat_key, "day", self.chat_daily),
            ("chat", chat_key, "month", self.chat_monthly),
        ]


class Reservation(BaseModel):
    """An estimate held against a user's and a chat's budgets until it is settled or released."""

    id: str
    user_key: str
    chat_key: str
    amount: Decimal


@dataclass(frozen=True)
class BudgetRefusal:
    """Why a reservation was refused: the first budget it would overrun."""

    scope: Scope
    period: Period
    limit: Decimal
    left: Decimal
    resets_at: datetime


class BudgetBook(Protocol):
    limits: BudgetLimits

    async def check(self, user_key: str, chat_key: str, amount: Decimal) -> BudgetRefusal | None: ...

    async def reserve(self, user_key: str, chat_key: str, amount: Decimal) -> Reservation | BudgetRefusal: ...

    async def hold(self, reservation: Reservation) -> None: ...

    async def consume(self, reservation: Reservation, spent: Decimal) -> None:
        """Part of a long reservation (a short's) was just spent and recorded in the ledger."""
        ...

    async def settle(self, reservation: Reservation, actual: Decimal) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...


def _resets_at(period: Period, now: datetime) -> datetime:
    return next_day(now) if period == "day" else next_month(now)


def _new_reservation(user_key: str, chat_key: str, amount: Decimal) -> Reservation:
    return Reservation(id=uuid.uuid4().hex, user_key=user_key, chat_key=chat_key, amount=amount)


class LocalBudgets:
    """Reservations of one process, held in memory beside the ledger's totals."""

    def __init__(self, ledger: UsageLedger, limits: BudgetLimits) -> None:
        self.ledger = ledger
        self.limits = limits
        self._held: dict[str, Reservation] = {}
        self._held_per_key: dict[tuple[str, str], Decimal] = {}

    def held(self, scope: Scope, key: str) -> Decimal:
        return self._held_per_key.get((scope, key), Decimal("0"))

    def _refusal(self, user_key: str, chat_key: str, amount: Decimal, now: datetime) -> BudgetRefusal | None:
        for scope, key, period, limit in self.limits.slots(user_key, chat_key):
            if not limit:
                continue
            spend = self.ledger.current(scope, key)
            used = (spend.today if period == "day" else spend.this_month) + self.held(scope, key)
            if used + amount > limit:
                return BudgetRefusal(scope, period, limit, max(Decimal("0"), limit - used), _resets_at(period, now))
        return None

    async def check(self, user_key: str, chat_key: str, amount: Decimal) -> BudgetRefusal | None:
        now = utcnow()
        await self.ledger.ensure_fresh(now)
        return self._refusal(user_key, chat_key, amount, now)

    async def reserve(self, user_key: str, chat_key: str, amount: Decimal) -> Reservation | BudgetRefusal:
        now = utcnow()
        await self.ledger.ensure_fresh(now)
        # From here to the return nothing awaits: the check and the hold are one step.
        refusal = self._refusal(user_key, chat_key, amount, now)
        if refusal is not None:
            return refusal
        reservation = _new_reservation(user_key, chat_key, amount)
        self._add(reservation)
        return reservation

    async def hold(self, reservation: Reservation) -> None:
        if reservation.id not in self._held:
            self._add(reservation)

    async def consume(self, reservation: Reservation, spent: Decimal) -> None:
        """Hold that much less: spend recorded in the ledger counts from its totals already, and a
        short that records its clips one by one must not be counted twice while it runs."""
        held = self._held.get(reservation.id)
        if held is None or spent <= 0:
            return
        less = min(spent, held.amount)
        self._held[reservation.id] = held.model_copy(update={"amount": held.amount - less})
        for slot in (("user", held.user_key), ("chat", held.chat_key)):
            left = self._held_per_key.get(slot, Decimal("0")) - less
            if left > 0:
                self._held_per_key[slot] = left
            else:
                self._held_per_key.pop(slot, None)

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Drop the hold; the real cost is already in the ledger's totals (``UsageLedger.record``)."""
        self._drop(reservation.id)

    async def release(self, reservation: Reservation) -> None:
        self._drop(reservation.id)

    def _add(self, reservation: Reservation) -> None:
        self._held[reservation.id] = reservation
        for slot in (("user", reservation.user_key), ("chat", reservation.chat_key)):
            self._held_per_key[slot] = self._held_per_key.get(slot, Decimal("0")) + reservation.amount

    def _drop(self, reservation_id: str) -> None:
        reservation = self._held.pop(reservation_id, None)
        if reservation is None:
            return
        for slot in (("user", reservation.user_key), ("chat", reservation.chat_key)):
            left = self._held_per_key.get(slot, Decimal("0")) - reservation.amount
            if left > 0:
                self._held_per_key[slot] = left
            else:
                self._held_per_key.pop(slot, None)


# KEYS: the four counters, then the reservation key. ARGV: amount, the four limits (0 = none), the
# reservation's JSON, its TTL, mode ("reserve", "check" or "hold"), then per counter the value to
# start it from and its TTL. Returns {1} when done, {0, i, used} when counter i would pass its limit.
_RESERVE_SCRIPT = """
for i = 1, 4 do
  redis.call('SET', KEYS[i], ARGV[8 + i], 'NX', 'EX', tonumber(ARGV[12 + i]))
end
local amount = tonumber(ARGV[1])
local mode = ARGV[8]
if mode ~= 'hold' then
  for i = 1, 4 do
    local limit = tonumber(ARGV[1 + i])
    local used = tonumber(redis.call('GET', KEYS[i]))
    if limit > 0 and used + amount > limit then return {0, i, used} end
  end
end
if mode == 'check' then return {1} end
if mode == 'hold' and redis.call('EXISTS', KEYS[5]) == 1 then return {1} end
for i = 1, 4 do redis.call('INCRBY', KEYS[i], amount) end
redis.call('SET', KEYS[5], ARGV[6], 'EX', tonumber(ARGV[7]))
return {1}
"""

# KEYS: the reservation key, then the four counters of the current period (used only when the
# reservation is gone). ARGV: the real cost in micro-dollars.
_SETTLE_SCRIPT = """
local actual = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1])
local counters = {KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
local delta = actual
if stored then
  local reservation = cjson.decode(stored)
  counters = reservation['counters']
  delta = actual - tonumber(reservation['micros'])
  redis.call('DEL', KEYS[1])
end
if delta ~= 0 then
  for _, key in ipairs(counters) do
    if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
  end
end
return 1
"""


def _micros(amount: Decimal) -> int:
    return int((amount * MICRO).to_integral_value())


class RedisBudgets:
    """Reservations shared by every process on one Redis, checked and held by one Lua script."""

    def __init__(self, ledger: UsageLedger, limits: BudgetLimits, *, prefix: str = "reelwright") -> None:
        self.ledger = ledger
        self.limits = limits
        self.prefix = prefix
        self._reserve = redis_client().register_script(_RESERVE_SCRIPT)
        self._settle = redis_client().register_script(_SETTLE_SCRIPT)

    def _counter(self, scope: Scope, key: str, period: Period, now: datetime) -> str:
        stamp = day_start(now).strftime("%Y-%m-%d") if period == "day" else month_start(now).strftime("%Y-%m")
        return f"{self.prefix}:budget:{scope}:{key}:{period}:{stamp}"

    def _reservation_key(self, reservation_id: str) -> str:
        return f"{self.prefix}:reservation:{reservation_id}"

    async def _run(
        self, mode: str, user_key: str, chat_key: str, amount: Decimal, reservation: Reservation | None
    ) -> BudgetRefusal | None:
        now = utcnow()
        await self.ledger.ensure_fresh(now)
        slots = self.limits.slots(user_key, chat_key)
        counters = [self._counter(scope, key, period, now) for scope, key, period, _ in slots]
        body = json.dumps({"micros": _micros(amount), "counters": counters})
        reservation_key = self._reservation_key(reservation.id if reservation else "none")
        args: list[str | int] = [
            _micros(amount),
            *(_micros(limit) for *_, limit in slots),
            body,
            RESERVATION_TTL_SECONDS,
            mode,
            *(self._seed(scope, key, period) for scope, key, period, _ in slots),
            *(COUNTER_TTL_SECONDS[period] for _, _, period, _ in slots),
        ]
        result = await self._reserve(keys=[*counters, reservation_key], args=args)
        if int(result[0]) == 1:
            return None
        index = int(result[1]) - 1
        scope, _, period, limit = slots[index]
        used = Decimal(int(result[2])) / MICRO
        return BudgetRefusal(scope, period, limit, max(Decimal("0"), limit - used), _resets_at(period, now))

    def _seed(self, scope: Scope, key: str, period: Period) -> int:
        """Where a counter Redis does not have starts: the ledger's totals (the database's, refreshed
        periodically, plus this process's unflushed rows), so no query per new user or chat. A
        counter is missing on first use in a period, when no process has spent on it yet, or after
        Redis lost its data, when the ledger's last refresh is the best record there is. The script
        uses it only for a counter that does not exist (SET NX)."""
        spend = self.ledger.current(scope, key)
        return _micros(spend.today if period == "day" else spend.this_month)

    async def check(self, user_key: str, chat_key: str, amount: Decimal) -> BudgetRefusal | None:
        return await self._run("check", user_key, chat_key, amount, None)

    async def reserve(self, user_key: str, chat_key: str, amount: Decimal) -> Reservation | BudgetRefusal:
        reservation = _new_reservation(user_key, chat_key, amount)
        refusal = await self._run("reserve", user_key, chat_key, amount, reservation)
        return refusal if refusal is not None else reservation

    async def hold(self, reservation: Reservation) -> None:
        await self._run("hold", reservation.user_key, reservation.chat_key, reservation.amount, reservation)

    async def consume(self, reservation: Reservation, spent: Decimal) -> None:
        """Nothing to do: these counters hold the whole reservation and never see the ledger's
        records, so nothing is counted twice; the real cost replaces the reservation at ``settle``."""

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        now = utcnow()
        counters = [
            self._counter(scope, key, period, now)
            for scope, key, period, _ in self.limits.slots(reservation.user_key, reservation.chat_key)
        ]
        await self._settle(keys=[self._reservation_key(reservation.id), *counters], args=[_micros(actual)])

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, Decimal("0"))
