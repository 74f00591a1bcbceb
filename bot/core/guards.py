"""Guardrails around every command, as chat-core middlewares: who may use the bot, how fast, and
how much money a command may spend. A paid command's declared estimate is reserved against every
budget that applies before the paid call (``services.budgets``), settled to the real usage the
providers reported afterwards, or released when nothing was spent; expensive commands ask first.

Rate limiting uses the ``limits`` library's moving window per user: in memory in one process, in
Redis when REDIS_URL is set, so a burst spread over several processes is cut at the same limit.
Every command over it gets one short "slow down" answer and makes no paid call.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as SharedMovingWindowRateLimiter
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bot.core.commands import Command, Option, OptionKind
from bot.core.context import CommandContext, is_chat_admin
from bot.core.dispatcher import Next
from bot.core.rendering import money_text
from bot.core.replies import Reply
from connectors.errors import QuotaError, UserInputError
from connectors.redis_client import redis_pool
from services.budgets import BudgetBook, BudgetRefusal
from services.config import ServiceConfig
from services.ledger import UsageLedger
from services.metering import Meter, current_meter
from services.pricing import PriceTable
from services.store.models import utcnow

CONFIRM_TTL_SECONDS = 600
MAX_PENDING_CONFIRMATIONS = 10_000


def id_set(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


class _ConfirmationNeeded(Exception):
    """Raised at a late-confirming handler's paid-call gate; turned into the cost question."""


@dataclass(frozen=True)
class GuardConfig:
    allowed_users: frozenset[str] = frozenset()
    allowed_chats: frozenset[str] = frozenset()
    allowed_guilds: frozenset[str] = frozenset()
    allowed_roles: frozenset[str] = frozenset()
    rate_limit: str = "20/minute"
    confirm_above: Decimal = Decimal("0")
    shared_rate_limit_url: str | None = None  # a Redis URL: the rate limit is counted there
    shared_key_prefix: str = "reelwright"


def estimate_cost(command: Command, args: dict[str, Any], config: ServiceConfig, prices: PriceTable) -> Decimal | None:
    """The command's declared estimate, priced; None for a command that costs nothing."""
    if command.estimate is None:
        return None
    return sum((prices.cost(model, usage) for model, usage in command.estimate(args, config)), Decimal("0"))


def _resets_in(moment: datetime, now: datetime) -> str:
    hours = (moment - now).total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{max(1, round(hours * 60))} min"


def refused_by_budget(what: str, estimate: Decimal, refusal: BudgetRefusal) -> QuotaError:
    """What a user reads when ``what`` (a command, a retry) would overrun a budget: which one, what is
    left and when it resets."""
    label = {
        ("user", "day"): "your daily",
        ("user", "month"): "your monthly",
        ("chat", "day"): "this chat's daily",
        ("chat", "month"): "this chat's monthly",
    }[(refusal.scope, refusal.period)]
    return QuotaError(
        f"budget {label} {refusal.limit} exceeded by estimate {estimate}",
        user_message=(
            f"{what} would cost about {money_text(estimate)}, but {label} budget has "
            f"{money_text(refusal.left)} of {money_text(refusal.limit)} left. "
            f"It resets in {_resets_in(refusal.resets_at, utcnow())}."
        ),
    )


@dataclass
class _Pending:
    ctx: CommandContext
    expires: float


@dataclass
class Guards:
    """The middlewares, with what they share: the ledger, the budget book and the price table.

    Commands whose upstream is in ``unbilled_upstreams`` (the sandbox's fakes) are neither
    reserved for, nor recorded, nor counted in spend metrics.
    """

    config: GuardConfig
    ledger: UsageLedger
    budgets: BudgetBook
    prices: PriceTable
    services: ServiceConfig
    unbilled_upstreams: frozenset[str] = frozenset()
    _limiter: MovingWindowRateLimiter | None = field(init=False, default=None)
    _shared_limiter: SharedMovingWindowRateLimiter | None = field(init=False, default=None)
    _limit: RateLimitItem = field(init=False)
    _pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._limit = parse(self.config.rate_limit)
        url = self.config.shared_rate_limit_url
        if url:
            shared_pool: dict[str, Any] = {"connection_pool": redis_pool()}
            storage = RedisStorage(
                f"async+{url}",
                implementation="redispy",
                key_prefix=f"{self.config.shared_key_prefix}:rate",
                **shared_pool,
            )
            self._shared_limiter = SharedMovingWindowRateLimiter(storage)
        else:
            self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def middlewares(self) -> list[Any]:
        return [self.check_permissions, self.check_rate, self.check_budget_and_meter]

    async def check_permissions(self, ctx: CommandContext, call_next: Next) -> Reply:
        config = self.config
        invocation = ctx.invocation
        if config.allowed_users and not ({ctx.user.id, ctx.user.key} & config.allowed_users):
            return Reply.error("This bot is private; you are not on its list of users.")
        if config.allowed_chats and not ({ctx.chat.id, f"{ctx.chat.platform}:{ctx.chat.id}"} & config.allowed_chats):
            return Reply.error("This bot is not enabled in this chat.")
        if config.allowed_guilds and invocation and invocation.guild_id not in config.allowed_guilds:
            return Reply.error("This bot is not enabled on this server.")
        if config.allowed_roles and ctx.chat.platform == "discord":
            roles = set(invocation.roles if invocation else ())
            if not roles & config.allowed_roles:
                return Reply.error("You need one of the roles allowed to use this bot.")
        return await call_next(ctx)

    async def check_rate(self, ctx: CommandContext, call_next: Next) -> Reply:
        if ctx.command.upstream is None:
            return await call_next(ctx)  # /help, /jobs, /usage cost nothing
        wait = await self._rate_wait(ctx.user.key)
        if wait is not None:
            return Reply.error(f"Slow down: you can run {self._limit} commands. Try again in about {wait} s.")
        return await call_next(ctx)

    async def _rate_wait(self, user_key: str) -> int | None:
        """None when the command may run; else the seconds until the window lets one more through."""
        if self._limiter is not None:
            if self._limiter.hit(self._limit, user_key):
                return None
            reset_at, _ = self._limiter.get_window_stats(self._limit, user_key)
        else:
            assert self._shared_limiter is not None
            if await self._shared_limiter.hit(self._limit, user_key):
                return None
            reset_at, _ = await self._shared_limiter.get_window_stats(self._limit, user_key)
        return max(1, math.ceil(reset_at - time.time()))

    async def check_budget_and_meter(self, ctx: CommandContext, call_next: Next) -> Reply:
        command = ctx.command
        if command.upstream in self.unbilled_upstreams:
            return await call_next(ctx)
        estimate = estimate_cost(command, ctx.args, self.services, self.prices)
        if estimate is None:
            return await call_next(ctx)
        # The console is the operator's own terminal: it is never asked to confirm.
        confirmed = (ctx.invocation.confirmed if ctx.invocation else False) or ctx.chat.platform == "console"
        must_ask = bool(self.config.confirm_above) and estimate >= self.config.confirm_above and not confirmed

        async def reserve() -> None:
            outcome = await self.budgets.reserve(ctx.user.key, ctx.chat_key, estimate)
            if isinstance(outcome, BudgetRefusal):
                raise self._refused(ctx, estimate, outcome)
            ctx.reservation = outcome

        async def ask_or_reserve() -> None:
            if must_ask:
                await self._check_budgets(ctx, estimate)  # never ask to confirm what would be refused
                raise _ConfirmationNeeded
            await reserve()

        if command.confirms_late:
            ctx.paid_call_gate = ask_or_reserve
        elif must_ask:
            await self._check_budgets(ctx, estimate)
            return self._ask_confirmation(ctx, estimate)
        else:
            await reserve()
        meter = Meter()
        meter_token = current_meter.set(meter)
        try:
            return await call_next(ctx)
        except _ConfirmationNeeded:
            # The handler validated everything first, so a bad request gets its clear error, not a price.
            return self._ask_confirmation(ctx, estimate)
        finally:
            current_meter.reset(meter_token)
            actual = Decimal("0")
            for model, usage in meter.entries:
                actual += self.ledger.record(
                    user_key=ctx.user.key, chat_key=ctx.chat_key, command=command.name, model=model, usage=usage
                )
            if ctx.reservation is not None:  # not taken over by a durable job
                await self.budgets.settle(ctx.reservation, actual)

    async def _check_budgets(self, ctx: CommandContext, estimate: Decimal) -> None:
        refusal = await self.budgets.check(ctx.user.key, ctx.chat_key, estimate)
        if refusal is not None:
            raise self._refused(ctx, estimate, refusal)

    def _refused(self, ctx: CommandContext, estimate: Decimal, refusal: BudgetRefusal) -> QuotaError:
        return refused_by_budget(f"/{ctx.command.name}", estimate, refusal)

    def _ask_confirmation(self, ctx: CommandContext, usd: Decimal) -> Reply:
        token = self._remember(replace(ctx, paid_call_gate=None))
        return Reply(
            blocks=[
                f"💸 /{ctx.command.name} will cost about {money_text(usd)}. "
                f"Send /confirm {token} within 10 minutes to go ahead."
            ],
            confirmation=token,
        )

    def _remember(self, ctx: CommandContext) -> str:
        now = time.monotonic()
        while self._pending and (
            len(self._pending) >= MAX_PENDING_CONFIRMATIONS or next(iter(self._pending.values())).expires < now
        ):
            self._pending.popitem(last=False)
        token = secrets.token_hex(3)
        self._pending[token] = _Pending(ctx, now + CONFIRM_TTL_SECONDS)
        return token

    def take_pending(self, token: str, user_key: str) -> CommandContext:
        pending = self._pending.get(token.strip().lower())
        if pending is None or pending.expires < time.monotonic() or pending.ctx.user.key != user_key:
            raise UserInputError("Nothing to confirm with that code (it may have expired). Run the command again.")
        del self._pending[token.strip().lower()]
        return pending.ctx


def confirm_command(guards: Guards) -> Command:
    """``/confirm <code>`` runs the command that asked for confirmation, as its own user."""

    async def confirm(ctx: CommandContext) -> Reply:
        code = (ctx.args.get("code") or "").strip()
        if not code:
            raise UserInputError("Give the code from the cost message: /confirm <code>.")
        original = guards.take_pending(code, ctx.user.key)
        invocation = None
        if original.invocation is not None:
            # The answer goes where /confirm was sent, so that chat's upload limit applies (when known).
            upload_limit = ctx.upload_limit if ctx.upload_limit is not None else original.upload_limit
            invocation = replace(original.invocation, confirmed=True, upload_limit=upload_limit)
        rerun = replace(
            original,
            invocation=invocation,
            _progress=ctx._progress,
            correlation_id=ctx.correlation_id,
            _last_progress=float("-inf"),
        )
        return await ctx.rerun(rerun)

    return Command(
        "confirm",
        "Confirm an expensive command",
        "Go ahead with a command that asked for confirmation because of its cost.",
        (Option("code", OptionKind.TEXT, "the code from the cost message", rest=True, max_length=20),),
        confirm,
        example="/confirm 1a2b3c",
        upstream=None,
    )


def usage_command(guards: Guards, admin_users: frozenset[str]) -> Command:
    """``/usage``: your spend today and this month; chat admins also see the chat's totals."""

    async def show_usage(ctx: CommandContext) -> Reply:
        now = utcnow()
        mine = await guards.ledger.spent("user", ctx.user.key, now)
        limits = guards.budgets.limits
        lines = [
            "💰 Your spend:",
            f"today {money_text(mine.today)}" + (f" of {money_text(limits.user_daily)}" if limits.user_daily else ""),
            f"this month {money_text(mine.this_month)}"
            + (f" of {money_text(limits.user_monthly)}" if limits.user_monthly else ""),
        ]
        is_admin = ctx.invocation is not None and await is_chat_admin(ctx.invocation, admin_users)
        blocks = ["\n".join(lines)]
        if is_admin:
            chat = await guards.ledger.spent("chat", ctx.chat_key, now)
            top = await guards.ledger.top_users(ctx.chat_key, now.replace(day=1, hour=0, minute=0, second=0))
            admin_lines = [f"🏢 This chat: today {money_text(chat.today)}, this month {money_text(chat.this_month)}"]
            admin_lines += [f"  {user}: {money_text(total)}" for user, total in top]
            blocks.append("\n".join(admin_lines))
        return Reply(blocks=blocks)

    return Command(
        "usage",
        "Your spend",
        "What you (and, for admins, this chat) spent today and this month.",
        (),
        show_usage,
        example="/usage",
        upstream=None,
    )
