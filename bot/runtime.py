"""The composition root: settings in, connectors and services configured, the chat core built,
and everything closed again in reverse order at shutdown.

``start_runtime`` reads top to bottom in the order things are built: the settings checked, the
database and Redis reached, the upstreams (providers or sandbox), money (ledger, budgets), durable jobs (service, queue, sweeper),
schedules, the guards, the commands and the chat core. Every object gets what it needs when it is
made; nothing is patched in afterwards. Platform adapters then register their senders on
``Runtime.senders`` and serve ``Runtime.core``.

With no AI key the console serves the sandbox upstream: the loopback fakes shipped in ``bot.sandbox``,
started in this process, and every reply they produced is labelled as sandbox output. A bot with a
platform token answers real people, so it uses the sandbox only when ``REELWRIGHT_SANDBOX`` asks
for it: without a text key it does not start, and without Google credentials its media commands
say they are not set up.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from bot.core.catalog import build_commands
from bot.core.dispatcher import ChatCore
from bot.core.guards import GuardConfig, Guards, confirm_command, id_set, usage_command
from bot.core.jobs import JobCommands
from bot.core.metrics import command_metrics, queue_position
from bot.core.senders import ChatSender, ChatSenders
from bot.core.storyboard import shutdown_storyboard_workers
from connectors import genai_connector, openai_connector
from connectors.database import check_database, close_database, configure_database
from connectors.genai_connector import GenAIConfig
from connectors.openai_connector import OpenRouterConfig
from connectors.redis_client import check_redis, close_redis, configure_redis
from connectors.resilience import UpstreamGuardConfig
from connectors.settings import Settings, SettingsError
from services.budgets import BudgetBook, BudgetLimits, LocalBudgets, RedisBudgets
from services.characters import DatabaseCharacterBook
from services.config import ServiceConfig, configure_services, service_config
from services.instance import claim_instance_id
from services.jobs import JobService
from services.ledger import UsageLedger
from services.memory import UserMemory
from services.metrics import install_upstream_observer
from services.pricing import PriceTable, PriceTableError
from services.queue import JobExecutor, JobQueue, JobSweeper
from services.schedules import ScheduleService, TrendScheduler
from services.stitch import configure_stitching, shutdown_stitches
from services.store.migrate import migrate_to_head
from services.store.models import utcnow
from services.trends import configure_trends_cache

log = logging.getLogger(__name__)

SANDBOX_KEY = "sandbox-key"
NO_KEY_FOR_LOCAL_SERVER = "no-key"
#: What /video and /thumbnail answer on a bot with no Google credentials (and no sandbox on purpose).
MEDIA_NOT_SET_UP = "its operator has to set GOOGLE_API_KEY (or GOOGLE_CLOUD_PROJECT for Vertex AI) first."


class PlatformStartError(Exception):
    """A platform could not start (token refused, server unreachable); the message says which."""


__all__ = ["ChatSender", "PlatformStartError", "Runtime", "start_runtime"]


@dataclass
class Runtime:
    """Everything a serving process runs on, built in order by ``start_runtime``; ``close`` stops it
    all in reverse order."""

    settings: Settings
    core: ChatCore
    senders: ChatSenders
    jobs: JobService
    queue: JobQueue
    executor: JobExecutor
    sweeper: JobSweeper
    schedules: ScheduleService
    trend_scheduler: TrendScheduler
    ledger: UsageLedger
    stack: AsyncExitStack
    sandbox_upstreams: frozenset[str] = frozenset()
    unavailable_upstreams: frozenset[str] = frozenset()
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def run_background(self, stop: asyncio.Event) -> None:
        """Job sweeping and purging, the ledger's flushes and the trend posts, until ``stop`` is set."""
        await self.trend_scheduler.start()
        try:
            await asyncio.gather(self.sweeper.run(stop), self.ledger.run(stop))
        finally:
            await self.trend_scheduler.stop()

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


def check_price_table(settings: Settings) -> PriceTable:
    """Prices are what budgets are measured in: a misspelled or negative one must stop the bot at start."""
    try:
        return PriceTable(settings.price_table)
    except PriceTableError as exc:
        raise SettingsError(f"Invalid setting PRICE_TABLE: {exc}") from None


def check_settings(settings: Settings, *, console: bool) -> PriceTable:
    """Everything that can be checked before anything starts; each failure is one line naming its setting."""
    check_media_dir(settings.media_dir)
    check_upstreams(settings, console=console)
    return check_price_table(settings)


async def open_storage(settings: Settings, stack: AsyncExitStack) -> None:
    """Connect to the database (and Redis) before anything else starts, so that a wrong URL stops the
    bot with one line; on failure whatever was opened here is closed again."""
    configure_database(settings.database_url)
    configure_redis(settings.redis_url)
    try:
        await check_database()
        await check_redis()
        await migrate_to_head()
    except BaseException:
        await close_redis()
        await close_database()
        raise
    stack.push_async_callback(close_database)
    stack.push_async_callback(close_redis)


async def start_runtime(settings: Settings, *, role: str = "run") -> Runtime:
    """Build every layer from ``settings``, in order, each from what exists before it; the returned
    runtime owns what must be closed. If a step fails, what already started is closed again.

    ``role`` (run, console, worker) names this process in its default instance id; the console is
    a terminal chat for the operator, where the sandbox is always allowed.
    """
    console = role == "console"
    prices = check_settings(settings, console=console)
    stack = AsyncExitStack()
    try:
        await open_storage(settings, stack)
        return await _build(settings, role, console, prices, stack)
    except BaseException:
        await stack.aclose()
        raise


async def _build(settings: Settings, role: str, console: bool, prices: PriceTable, stack: AsyncExitStack) -> Runtime:
    upstreams = await _configure_upstreams(settings, stack, sandbox_allowed=console or settings.sandbox_allowed)
    ledger = UsageLedger(prices)
    stack.push_async_callback(ledger.flush)
    budgets = _budget_book(settings, ledger)
    media_billed = "media" not in upstreams.sandbox

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
    senders = ChatSenders()
    executor = JobExecutor(jobs, senders.deliver_outcome, senders.notify_late)
    queue = JobQueue(executor, settings.redis_url, queue_name=settings.job_queue_name)
    await queue.start()
    stack.push_async_callback(queue.stop)
    sweeper = JobSweeper(
        jobs,
        queue,
        executor,
        started_at=utcnow(),
        every_seconds=settings.job_sweep_seconds,
        retention=timedelta(days=settings.media_retention_days),
    )
    schedules = ScheduleService(grace=timedelta(minutes=settings.schedule_grace_minutes))
    trend_scheduler = TrendScheduler(
        schedules, senders.post_trends, reconcile_seconds=settings.schedule_reconcile_seconds
    )

    guards = Guards(
        _guard_config(settings),
        ledger,
        budgets,
        prices,
        service_config(),
        unbilled_upstreams=upstreams.sandbox,
    )
    admins = id_set(settings.admin_users)
    commands = build_commands(
        UserMemory(),
        characters=DatabaseCharacterBook(settings.media_dir),
        jobs=JobCommands(jobs, queue, executor, senders.post),
        schedules=schedules,
    )
    commands.add(usage_command(guards, admins))
    commands.add(confirm_command(guards))
    if "media" in upstreams.unavailable:
        commands.withhold("media", MEDIA_NOT_SET_UP)
    core = ChatCore(
        commands,
        sandbox_upstreams=upstreams.sandbox,
        # Metrics outermost, so they see every refusal; then the line position as progress.
        middlewares=[command_metrics, queue_position, *guards.middlewares],
        admin_users=admins,
    )
    install_upstream_observer()
    configure_trends_cache(settings.trends_cache_seconds)
    stack.callback(configure_trends_cache, 0)
    # Started on the first storyboard; stopped here so that no worker process outlives the bot.
    stack.callback(shutdown_storyboard_workers)
    configure_stitching(settings.stitch_max_concurrent)
    # At shutdown the running jobs are stopped first, where they are (the next start resumes them),
    # then any stitching process still alive is killed: a short is stitched again, not waited for.
    stack.callback(shutdown_stitches)
    stack.push_async_callback(executor.stop)
    return Runtime(
        settings=settings,
        core=core,
        senders=senders,
        jobs=jobs,
        queue=queue,
        executor=executor,
        sweeper=sweeper,
        schedules=schedules,
        trend_scheduler=trend_scheduler,
        ledger=ledger,
        stack=stack,
        sandbox_upstreams=upstreams.sandbox,
        unavailable_upstreams=upstreams.unavailable,
    )


@dataclass(frozen=True)
class _Upstreams:
    sandbox: frozenset[str]
    unavailable: frozenset[str]


async def _configure_upstreams(settings: Settings, stack: AsyncExitStack, *, sandbox_allowed: bool) -> _Upstreams:
    """Point the connectors at the providers, or at the sandbox fakes (imported only then: a process
    with keys never loads them), and configure the services' models and limits."""
    sandbox: set[str] = set()
    unavailable: set[str] = set()
    openrouter_key = settings.openrouter_api_key.get_secret_value() if settings.openrouter_api_key else None
    openrouter_url = str(settings.openrouter_base_url).rstrip("/")
    if settings.text_sandbox:
        from bot.sandbox.fake_openrouter import SandboxOpenRouter

        fake_text = SandboxOpenRouter()
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
        from bot.sandbox.fake_genai import SandboxGenAI

        fake_media = SandboxGenAI(video_seconds=3.0)
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
            tts_model=settings.tts_model,
            tts_voice=settings.tts_voice,
            genai_enterprise=enterprise,
            max_prompt_chars=settings.max_prompt_chars,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            video_poll_initial_seconds=poll_initial,
            video_poll_max_seconds=poll_max,
            video_deadline_seconds=settings.video_deadline_seconds,
            video_hard_deadline_seconds=settings.video_hard_deadline_seconds,
            video_max_bytes=settings.video_max_bytes,
            short_long_side=settings.short_long_side,
            short_max_bytes=settings.short_max_mb * 1024 * 1024,
        )
    )
    return _Upstreams(frozenset(sandbox), frozenset(unavailable))


def _budget_book(settings: Settings, ledger: UsageLedger) -> BudgetBook:
    """Reservations in this process, or in Redis where every process sharing REDIS_URL sees them."""
    limits = BudgetLimits(
        user_daily=Decimal(str(settings.budget_user_daily_usd)),
        user_monthly=Decimal(str(settings.budget_user_monthly_usd)),
        chat_daily=Decimal(str(settings.budget_chat_daily_usd)),
        chat_monthly=Decimal(str(settings.budget_chat_monthly_usd)),
    )
    if settings.redis_url:
        return RedisBudgets(ledger, limits, prefix=settings.redis_key_prefix)
    return LocalBudgets(ledger, limits)


def _guard_config(settings: Settings) -> GuardConfig:
    return GuardConfig(
        allowed_users=id_set(settings.allowed_users),
        allowed_chats=id_set(settings.allowed_chats),
        allowed_guilds=id_set(settings.allowed_guilds),
        allowed_roles=id_set(settings.allowed_roles),
        rate_limit=settings.rate_limit,
        confirm_above=Decimal(str(settings.confirm_above_usd)),
        shared_rate_limit_url=settings.redis_url,
        shared_key_prefix=settings.redis_key_prefix,
    )


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
