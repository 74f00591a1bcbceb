"""The composition root: settings in, connectors and services configured, the chat core built,
and everything closed again in reverse order at shutdown.

With no AI key the console serves the sandbox upstream: the loopback fakes shipped in ``bot.sandbox``,
started in this process, and every reply they produced is labelled as sandbox output. A bot with a
platform token answers real people, so it uses the sandbox only when ``REELWRIGHT_SANDBOX`` asks
for it: without a text key it does not start, and without Google credentials its media commands
say they are not set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from bot.core.catalog import build_commands
from bot.core.commands import CommandSet
from bot.core.context import ChatRef
from bot.core.dispatcher import ChatCore
from bot.core.guards import GuardConfig, Guards, confirm_command, id_set, usage_command
from bot.core.jobs import JobCommands, chat_of, late_reply, outcome_reply
from bot.core.metrics import command_metrics, queue_position
from bot.core.replies import Reply
from bot.core.scheduling import trend_post
from bot.core.storyboard import shutdown_storyboard_workers
from bot.sandbox.fake_genai import SandboxGenAI as FakeGenAI
from bot.sandbox.fake_openrouter import SandboxOpenRouter as FakeOpenRouter
from connectors import genai_connector, openai_connector
from connectors.database import close_database, configure_database
from connectors.genai_connector import GenAIConfig
from connectors.openai_connector import OpenRouterConfig
from connectors.redis_client import close_redis, configure_redis
from connectors.resilience import UpstreamGuardConfig
from connectors.settings import Settings, SettingsError
from services.budgets import BudgetBook, BudgetLimits, LocalBudgets, RedisBudgets
from services.characters import DatabaseCharacterBook
from services.config import ServiceConfig, configure_services, service_config
from services.instance import claim_instance_id
from services.jobs import JobLate, JobOutcome, JobService
from services.ledger import UsageLedger
from services.memory import UserMemory
from services.metrics import install_upstream_observer
from services.pricing import PriceTable
from services.queue import JobExecutor, JobQueue
from services.schedules import ScheduleService, ScheduleView, TrendScheduler
from services.store.migrate import migrate_to_head
from services.store.models import utcnow
from services.trends import TrendReport, configure_trends_cache

log = logging.getLogger(__name__)

SANDBOX_KEY = "sandbox-key"
NO_KEY_FOR_LOCAL_SERVER = "no-key"
#: What /video and /thumbnail answer on a bot with no Google credentials (and no sandbox on purpose).
MEDIA_NOT_SET_UP = "its operator has to set GOOGLE_API_KEY (or GOOGLE_CLOUD_PROJECT for Vertex AI) first."


class PlatformStartError(Exception):
    """A platform could not start (token refused, server unreachable); the message says which."""


class ChatSender(Protocol):
    """Posts a reply to a chat by its address alone, with no live interaction or update.

    Each platform adapter registers one in ``Runtime.senders`` when it starts, so that work which
    finishes later (a resumed video job, a scheduled trend post) can still be delivered.
    """

    async def send(self, chat: ChatRef, reply: Reply) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    core: ChatCore
    sandbox_upstreams: frozenset[str]
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    unavailable_upstreams: frozenset[str] = frozenset()
    senders: dict[str, ChatSender] = field(default_factory=dict)
    jobs: JobService | None = None
    queue: JobQueue | None = None
    executor: JobExecutor | None = None
    schedules: ScheduleService | None = None
    ledger: UsageLedger | None = None
    started_at: datetime = field(default_factory=utcnow)

    async def post_trends(self, view: ScheduleView, report: TrendReport) -> None:
        sender = self.senders.get(view.platform)
        if sender is None:
            raise LookupError(f"no {view.platform} sender in this process yet")
        await sender.send(ChatRef(platform=view.platform, id=view.chat_id, is_private=False), trend_post(view, report))

    async def run_background(self, stop: asyncio.Event) -> None:
        """Job recovery and maintenance, and the trend-post scheduler, until ``stop`` is set."""
        scheduler = None
        if self.schedules is not None:
            scheduler = TrendScheduler(
                self.schedules, self.post_trends, reconcile_seconds=self.settings.schedule_reconcile_seconds
            )
            await scheduler.start()
        flusher = asyncio.create_task(self.ledger.run(stop)) if self.ledger is not None else None
        try:
            await self.run_job_maintenance(stop)
        finally:
            if flusher is not None:
                await flusher
            if scheduler is not None:
                await scheduler.stop()

    async def deliver_outcome(self, outcome: JobOutcome) -> None:
        """Deliver a finished job through its platform's sender (no live interaction needed)."""
        sender = self.senders.get(outcome.address.platform)
        if sender is None:
            raise LookupError(f"no {outcome.address.platform} sender in this process yet")
        await sender.send(chat_of(outcome), await outcome_reply(outcome))

    async def notify_late(self, notice: JobLate) -> None:
        """Tell the chat that a video is past the deadline and will follow (no command is waiting)."""
        sender = self.senders.get(notice.address.platform)
        if sender is None:
            raise LookupError(f"no {notice.address.platform} sender in this process yet")
        chat = ChatRef(platform=notice.address.platform, id=notice.address.chat_id, is_private=False)
        await sender.send(chat, late_reply(notice.job_id, notice.elapsed_seconds))

    async def sweep_jobs(self) -> int:
        """Resume every unfinished job nobody holds (after a crash, a restart or a lost worker),
        including at once those this instance's previous process held when it died."""
        if self.jobs is None or self.queue is None or self.executor is None:
            return 0
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

    async def run_job_maintenance(self, stop: asyncio.Event) -> None:
        """Sweep unfinished jobs now and periodically; purge old media files about hourly."""
        assert self.jobs is not None
        retention = timedelta(days=self.settings.media_retention_days)
        last_purge = float("-inf")
        while not stop.is_set():
            try:
                await self.sweep_jobs()
                if time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    removed = await self.jobs.purge_media(retention)
                    if removed:
                        log.info("removed %d media file(s) past retention", removed)
            except Exception:
                log.exception("job maintenance failed; will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.job_sweep_seconds)

    async def close(self) -> None:
        await self.stack.aclose()


def upstream_guard_config(settings: Settings, *, max_concurrent: int, max_waiting: int) -> UpstreamGuardConfig:
    """One upstream's circuit breaker (shared settings) and line sizes (its own)."""
    return UpstreamGuardConfig(
        failure_threshold=settings.circuit_failure_threshold,
        cooldown_seconds=settings.circuit_cooldown_seconds,
        max_concurrent=max_concurrent,
        max_waiting=max_waiting,
    )


def check_media_dir(path: Path) -> None:
    """Paid results are saved under MEDIA_DIR: make sure a file can be written there before any is paid for."""
    if path.exists() and not path.is_dir():
        raise SettingsError(f"Invalid setting MEDIA_DIR: {path} is a file, not a directory")
    probe = path / f".reelwright-probe-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"Invalid setting MEDIA_DIR: {path} is not a writable directory ({exc.strerror})") from None


def check_upstreams(settings: Settings, *, console: bool) -> None:
    """A bot that answers real people never makes up its text replies unless told to."""
    if settings.text_sandbox and not (console or settings.sandbox_allowed):
        raise SettingsError(
            "Missing setting OPENROUTER_API_KEY: a bot with a Telegram or Discord token needs it (or "
            "OPENROUTER_BASE_URL of a server of your own); REELWRIGHT_SANDBOX=1 serves made-up sandbox replies instead"
        )


async def start_runtime(settings: Settings, *, role: str = "run") -> Runtime:
    """Configure every layer from ``settings``; the returned runtime owns what must be closed.

    ``role`` (run, console, worker) names this process in its default instance id; the console is
    a terminal chat for the operator, where the sandbox is always allowed.
    """
    console = role == "console"
    check_media_dir(settings.media_dir)
    check_upstreams(settings, console=console)
    sandbox_allowed = console or settings.sandbox_allowed
    stack = AsyncExitStack()
    sandbox: set[str] = set()
    unavailable: set[str] = set()
    openrouter_key = settings.openrouter_api_key.get_secret_value() if settings.openrouter_api_key else None
    openrouter_url = str(settings.openrouter_base_url).rstrip("/")
    if settings.text_sandbox:
        fake_text = FakeOpenRouter()
        openrouter_url = await fake_text.start()
        stack.push_async_callback(fake_text.stop)
        openrouter_key = SANDBOX_KEY
        sandbox.add("text")
        log.warning("OPENROUTER_API_KEY is not set: text commands use the SANDBOX upstream at %s", openrouter_url)
    elif openrouter_key is None:
        openrouter_key = NO_KEY_FOR_LOCAL_SERVER
        log.info("no OPENROUTER_API_KEY: calling %s without a key", openrouter_url)

    google_key = settings.google_api_key.get_secret_value() if settings.google_api_key else None
    genai_url = str(settings.genai_base_url).rstrip("/") if settings.genai_base_url else None
    enterprise = settings.genai_enterprise
    poll_initial, poll_max = settings.video_poll_initial_seconds, settings.video_poll_max_seconds
    if settings.media_sandbox and not sandbox_allowed:
        unavailable.add("media")
        log.warning("no GOOGLE_API_KEY or GOOGLE_CLOUD_PROJECT: /video and /thumbnail are not set up on this bot")
    elif settings.media_sandbox:
        fake_media = FakeGenAI(video_seconds=3.0)
        genai_url = await fake_media.start()
        stack.push_async_callback(fake_media.stop)
        google_key, enterprise = SANDBOX_KEY, False
        poll_initial, poll_max = 1.0, 2.0
        sandbox.add("media")
        log.warning("GOOGLE_API_KEY is not set: video and thumbnail commands use the SANDBOX upstream at %s", genai_url)

    openai_connector.configure_openai(
        OpenRouterConfig(
            api_key=openrouter_key,
            base_url=openrouter_url,
            timeout_seconds=settings.text_timeout_seconds,
            max_retries=settings.text_max_retries,
            site_url=settings.openrouter_site_url,
            app_name=settings.openrouter_app_name,
            vision_timeout_seconds=settings.vision_timeout_seconds,
            guard=upstream_guard_config(
                settings, max_concurrent=settings.text_max_concurrent, max_waiting=settings.text_max_waiting
            ),
        )
    )
    stack.push_async_callback(openai_connector.close_openai_client)
    genai_connector.configure_genai(
        GenAIConfig(
            api_key=google_key,
            base_url=genai_url,
            enterprise=enterprise,
            project=settings.google_cloud_project,
            location=settings.google_cloud_location,
            timeout_seconds=settings.media_timeout_seconds,
            retry_attempts=settings.media_max_retries,
            video_max_bytes=settings.video_max_bytes,
            video_start_timeout_seconds=settings.video_start_timeout_seconds,
            video_poll_timeout_seconds=settings.video_poll_timeout_seconds,
            image_timeout_seconds=settings.image_timeout_seconds,
            guard=upstream_guard_config(
                settings, max_concurrent=settings.media_max_concurrent, max_waiting=settings.media_max_waiting
            ),
        )
    )
    stack.push_async_callback(genai_connector.close_genai_client)
    configure_services(
        ServiceConfig(
            story_model=settings.story_model,
            meme_model=settings.meme_model,
            content_model=settings.content_model,
            trends_model=settings.trends_model,
            vision_model=settings.vision_model,
            video_model=settings.video_model,
            image_model=settings.image_model,
            gemini_image_model=settings.gemini_image_model,
            genai_enterprise=enterprise,
            max_prompt_chars=settings.max_prompt_chars,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            video_poll_initial_seconds=poll_initial,
            video_poll_max_seconds=poll_max,
            video_deadline_seconds=settings.video_deadline_seconds,
            video_hard_deadline_seconds=settings.video_hard_deadline_seconds,
            video_max_bytes=settings.video_max_bytes,
        )
    )
    configure_database(settings.database_url)
    stack.push_async_callback(close_database)
    await migrate_to_head()
    prices = PriceTable(settings.price_table)
    ledger = UsageLedger(prices)
    stack.push_async_callback(ledger.flush)
    configure_redis(settings.redis_url)
    stack.push_async_callback(close_redis)
    limits = BudgetLimits(
        user_daily=Decimal(str(settings.budget_user_daily_usd)),
        user_monthly=Decimal(str(settings.budget_user_monthly_usd)),
        chat_daily=Decimal(str(settings.budget_chat_daily_usd)),
        chat_monthly=Decimal(str(settings.budget_chat_monthly_usd)),
    )
    budgets: BudgetBook = (
        RedisBudgets(ledger, limits, prefix=settings.redis_key_prefix)
        if settings.redis_url
        else LocalBudgets(ledger, limits)
    )
    media_billed = "media" not in sandbox
    instance = claim_instance_id(settings.instance_id_for(role), settings.media_dir / ".instances")
    stack.callback(instance.release)
    jobs = JobService(
        settings.media_dir,
        owner=instance.instance_id,
        lease_seconds=settings.job_lease_seconds,
        ledger=ledger if media_billed else None,
        budgets=budgets if media_billed else None,
        video_model=settings.video_model,
    )
    runtime = Runtime(
        settings=settings,
        core=ChatCore(CommandSet()),
        sandbox_upstreams=frozenset(sandbox),
        stack=stack,
        unavailable_upstreams=frozenset(unavailable),
    )
    executor = JobExecutor(jobs, runtime.deliver_outcome, runtime.notify_late)
    queue = JobQueue(executor, settings.redis_url, queue_name=settings.job_queue_name)
    await queue.start()
    stack.push_async_callback(queue.stop)
    runtime.jobs, runtime.queue, runtime.executor = jobs, queue, executor
    runtime.schedules = ScheduleService(grace=timedelta(minutes=settings.schedule_grace_minutes))
    commands = build_commands(
        UserMemory(),
        characters=DatabaseCharacterBook(),
        jobs=JobCommands(jobs, queue, executor),
        schedules=runtime.schedules,
    )
    if "media" in unavailable:
        commands.withhold("media", MEDIA_NOT_SET_UP)
    guards = Guards(
        GuardConfig(
            allowed_users=id_set(settings.allowed_users),
            allowed_chats=id_set(settings.allowed_chats),
            allowed_guilds=id_set(settings.allowed_guilds),
            allowed_roles=id_set(settings.allowed_roles),
            rate_limit=settings.rate_limit,
            confirm_above=Decimal(str(settings.confirm_above_usd)),
            shared_rate_limit_url=settings.redis_url,
            shared_key_prefix=settings.redis_key_prefix,
        ),
        ledger,
        budgets,
        prices,
        service_config(),
        unbilled_upstreams=frozenset(sandbox),
    )
    admins = id_set(settings.admin_users)
    core_ref: list[ChatCore] = []
    commands.add(usage_command(guards, admins))
    commands.add(confirm_command(guards, core_ref))
    runtime.core = ChatCore(
        commands, sandbox_upstreams=frozenset(sandbox), middlewares=guards.middlewares, admin_users=admins
    )
    core_ref.append(runtime.core)
    # Operations (issue 6): metrics outermost so they see every refusal; the line position as progress.
    runtime.core.middlewares[:0] = [command_metrics, queue_position]
    install_upstream_observer()
    configure_trends_cache(settings.trends_cache_seconds)
    stack.callback(configure_trends_cache, 0)
    # Started on the first storyboard; stopped here so that no worker process outlives the bot.
    stack.callback(shutdown_storyboard_workers)
    runtime.ledger = ledger
    return runtime


async def register_send_only_senders(runtime: Runtime) -> None:
    """Platform senders that only post (no polling, no gateway), for worker processes.

    Each adapter module may offer ``build_send_only_sender(runtime) -> ChatSender``.
    """
    settings = runtime.settings
    for platform, token in (("telegram", settings.telegram_bot_token), ("discord", settings.discord_bot_token)):
        if token is None:
            continue
        module = importlib.import_module(f"bot.{platform}.app")
        build = getattr(module, "build_send_only_sender", None)
        if build is None:
            log.warning("the %s adapter offers no send-only sender; its jobs wait for a bot process", platform)
            continue
        runtime.senders[platform] = await build(runtime)
