"""Guardrails around every command, as chat-core middlewares: who may use the bot, how fast, and
how much money a command may spend (estimated and refused before the paid call, confirmed when
it is expensive, and recorded afterwards with the real usage the providers reported).

Rate limiting uses the ``limits`` library's moving window (per user, in memory): a burst is cut at
the limit and every command over it gets one short "slow down" answer and makes no paid call.
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

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bot.core.commands import Command, Option, OptionKind
from bot.core.context import CommandContext
from bot.core.dispatcher import ChatCore, Next
from bot.core.replies import Reply
from connectors.errors import QuotaError, UserInputError
from services.config import ServiceConfig
from services.ledger import UsageLedger, next_day, next_month
from services.metering import Meter, current_meter
from services.pricing import PriceTable
from services.store.models import utcnow
from services.usage import Usage

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
    budget_user_daily: Decimal = Decimal("0")
    budget_user_monthly: Decimal = Decimal("0")
    budget_chat_daily: Decimal = Decimal("0")
    budget_chat_monthly: Decimal = Decimal("0")
    confirm_above: Decimal = Decimal("0")


@dataclass(frozen=True)
class Estimate:
    model: str
    usage: Usage
    usd: Decimal


def estimate_command(name: str, args: dict[str, Any], config: ServiceConfig, prices: PriceTable) -> Estimate | None:
    """A deliberately generous estimate of what a command will cost, before it runs."""
    prompt_tokens = 600 + len(str(args.get("idea") or args.get("topic") or args.get("brief") or "")) // 3
    text: dict[str, tuple[str, int]] = {
        "story": (config.story_model, 120 * int(args.get("segments") or 5) + 200),
        "longstory": (config.story_model, 120 * int(args.get("segments") or 24) + 800),
        "storysets": (config.story_model, 120 * int(args.get("segments") or 4) * int(args.get("sets") or 3)),
        "meme": (config.meme_model, 150 * int(args.get("count") or 3) + 100),
        "write": (config.content_model, 900),
        "trends": (config.trends_model, 160 * int(args.get("count") or 5) + 100),
        "character": (config.vision_model, 900),
    }
    if name in text:
        model, output_tokens = text[name]
        calls = {
            "longstory": 1 + math.ceil(int(args.get("segments") or 24) / 8),
            "storysets": int(args.get("sets") or 3),
        }
        usage = Usage(
            model_calls=calls.get(name, 1),
            prompt_tokens=prompt_tokens * calls.get(name, 1) + (1500 if name == "character" else 0),
            completion_tokens=output_tokens,
        )
        return Estimate(model, usage, prices.cost(model, usage))
    if name == "video":
        usage = Usage(video_seconds=int(args.get("duration") or 8))
        return Estimate(config.video_model, usage, prices.cost(config.video_model, usage))
    if name == "thumbnail":
        usage = Usage(images=1)
        return Estimate(config.thumbnail_model, usage, prices.cost(config.thumbnail_model, usage))
    return None


def _money(value: Decimal) -> str:
    return f"${value:.2f}" if value >= Decimal("0.01") else f"${value:.4f}"


def _resets_in(moment: datetime, now: datetime) -> str:
    hours = (moment - now).total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{max(1, round(hours * 60))} min"


@dataclass
class _Pending:
    ctx: CommandContext
    expires: float


@dataclass
class Guards:
    config: GuardConfig
    ledger: UsageLedger | None
    prices: PriceTable
    services: ServiceConfig
    _limiter: MovingWindowRateLimiter = field(init=False)
    _limit: Any = field(init=False)
    _pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limit = parse(self.config.rate_limit)

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
        if not self._limiter.hit(self._limit, ctx.user.key):
            reset_at, _ = self._limiter.get_window_stats(self._limit, ctx.user.key)
            wait = max(1, math.ceil(reset_at - time.time()))
            return Reply.error(f"Slow down: you can run {self._limit} commands. Try again in about {wait} s.")
        return await call_next(ctx)

    async def check_budget_and_meter(self, ctx: CommandContext, call_next: Next) -> Reply:
        estimate = estimate_command(ctx.command.name, ctx.args, self.services, self.prices)
        if estimate is None or self.ledger is None:
            return await call_next(ctx)
        await self._check_budgets(ctx, estimate.usd)
        # The console is the operator's own terminal: it is never asked to confirm.
        confirmed = (ctx.invocation.confirmed if ctx.invocation else False) or ctx.chat.platform == "console"
        needs_confirmation = bool(self.config.confirm_above) and estimate.usd >= self.config.confirm_above
        if needs_confirmation and not confirmed:
            if not ctx.command.confirms_late:
                return self._ask_confirmation(ctx, estimate.usd)

            async def stop_before_paying() -> None:
                raise _ConfirmationNeeded

            ctx.paid_call_gate = stop_before_paying
        meter = Meter()
        meter_token = current_meter.set(meter)
        try:
            return await call_next(ctx)
        except _ConfirmationNeeded:
            # The handler validated everything first, so a bad request gets its clear error, not a price.
            return self._ask_confirmation(ctx, estimate.usd)
        finally:
            current_meter.reset(meter_token)
            for model, usage in meter.entries:
                self.ledger.record(
                    user_key=ctx.user.key, chat_key=ctx.chat_key, command=ctx.command.name, model=model, usage=usage
                )

    def _ask_confirmation(self, ctx: CommandContext, usd: Decimal) -> Reply:
        token = self._remember(replace(ctx, paid_call_gate=None))
        return Reply(
            blocks=[
                f"💸 /{ctx.command.name} will cost about {_money(usd)}. "
                f"Send /confirm {token} within 10 minutes to go ahead."
            ],
            confirmation=token,
        )

    async def _check_budgets(self, ctx: CommandContext, estimate: Decimal) -> None:
        assert self.ledger is not None
        now = utcnow()
        user = await self.ledger.spent("user", ctx.user.key, now)
        chat = await self.ledger.spent("chat", ctx.chat_key, now)
        checks = [
            ("your daily", self.config.budget_user_daily, user.today, next_day),
            ("your monthly", self.config.budget_user_monthly, user.this_month, next_month),
            ("this chat's daily", self.config.budget_chat_daily, chat.today, next_day),
            ("this chat's monthly", self.config.budget_chat_monthly, chat.this_month, next_month),
        ]
        for label, limit, spent, reset_after in checks:
            if limit and spent + estimate > limit:
                left = max(Decimal("0"), limit - spent)
                resets = reset_after(now)
                raise QuotaError(
                    f"budget {label} {limit} exceeded by estimate {estimate}",
                    user_message=(
                        f"/{ctx.command.name} would cost about {_money(estimate)}, but {label} budget has "
                        f"{_money(left)} of {_money(limit)} left. It resets in {_resets_in(resets, now)}."
                    ),
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


def confirm_command(guards: Guards, core_ref: list[ChatCore]) -> Command:
    """``/confirm <code>`` runs the command that asked for confirmation, as its own user."""

    async def confirm(ctx: CommandContext) -> Reply:
        code = (ctx.args.get("code") or "").strip()
        if not code:
            raise UserInputError("Give the code from the cost message: /confirm <code>.")
        original = guards.take_pending(code, ctx.user.key)
        invocation = replace(original.invocation, confirmed=True) if original.invocation else None
        rerun = replace(
            original,
            invocation=invocation,
            _progress=ctx._progress,
            correlation_id=ctx.correlation_id,
            _last_progress=float("-inf"),
        )
        return await core_ref[0].run_context(rerun)

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
        if guards.ledger is None:
            raise UserInputError("Usage is not recorded in this setup.")
        now = utcnow()
        mine = await guards.ledger.spent("user", ctx.user.key, now)
        config = guards.config
        lines = [
            "💰 Your spend:",
            f"today {_money(mine.today)}"
            + (f" of {_money(config.budget_user_daily)}" if config.budget_user_daily else ""),
            f"this month {_money(mine.this_month)}"
            + (f" of {_money(config.budget_user_monthly)}" if config.budget_user_monthly else ""),
        ]
        invocation = ctx.invocation
        is_admin = ctx.user.id in admin_users or ctx.user.key in admin_users
        if not is_admin and invocation is not None and invocation.is_admin is not None:
            try:
                is_admin = await invocation.is_admin()
            except Exception:
                is_admin = False
        blocks = ["\n".join(lines)]
        if is_admin:
            chat = await guards.ledger.spent("chat", ctx.chat_key, now)
            top = await guards.ledger.top_users(ctx.chat_key, now.replace(day=1, hour=0, minute=0, second=0))
            admin_lines = [f"🏢 This chat: today {_money(chat.today)}, this month {_money(chat.this_month)}"]
            admin_lines += [f"  {user}: {_money(total)}" for user, total in top]
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
