"""Budget reservations on the production runtime (start_runtime) against the fakes: concurrent paid
commands never spend past a budget, failed work gives its budget back, the sandbox is never billed,
and every paid command declares a generous estimate."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.core.commands import Command, CommandSet, Option, OptionKind, parse_text_arguments, validate_arguments
from bot.core.context import ChatRef, Invocation, UserRef
from bot.core.guards import estimate_cost
from bot.core.replies import Reply
from bot.runtime import start_runtime
from connectors.database import sessions
from connectors.settings import load_settings
from services.budgets import Reservation
from services.config import ServiceConfig, service_config
from services.jobs import JobAddress
from services.metrics import REGISTRY
from services.pricing import PriceTable
from services.store.models import UsageRecord
from services.usage import Usage
from services.video import VideoRequest
from tests.bot.helpers import RecordingResponder, catalogue, png_bytes, uploaded
from tests.conftest import RuntimeFactory
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault


@pytest.fixture
def make_runtime(make_runtime: RuntimeFactory) -> RuntimeFactory:
    """Production runtimes on the AI fakes that never ask to confirm and never slow anyone down."""

    async def make(**overrides: Any) -> Any:
        return await make_runtime(
            **{"confirm_above_usd": 0, "rate_limit": "1000/minute", "short_long_side": 256, **overrides}
        )

    return make


def command(name: str, text: str, *, user: str = "7", chat: str = "-100", platform: str = "telegram") -> Invocation:
    return Invocation(
        command=name,
        user=UserRef(platform=platform, id=user, name="u"),
        chat=ChatRef(platform=platform, id=chat, is_private=False),
        text=text,
    )


def story_estimate() -> Decimal:
    """What ``/story a dragon`` (five segments) reserves at the default models and prices."""
    story = catalogue().get("story")
    assert story is not None
    estimate = estimate_cost(story, {"idea": "a dragon", "segments": 5}, ServiceConfig(), PriceTable())
    assert estimate is not None
    return estimate


async def usage_rows() -> int:
    async with sessions()() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageRecord)) or 0)


async def test_five_concurrent_videos_with_a_five_dollar_budget_pay_for_one(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    """An 8 s clip is estimated at $3.20: with $5 a day, one of five concurrent clips may run."""
    fake_genai.video_seconds = 0.3  # every command is in flight before the first video is done
    runtime = await make_runtime(budget_user_daily_usd=5.0)
    replies = await asyncio.gather(
        *(
            runtime.core.handle(command("video", f"a cat surfing {i} duration=8"), RecordingResponder())
            for i in range(5)
        )
    )
    paid = [reply for reply in replies if not reply.is_error]
    refused = [reply for reply in replies if reply.is_error]
    assert len(paid) == 1 and paid[0].media and paid[0].media[0].kind == "video"
    assert len(refused) == 4
    assert all("daily budget" in reply.text and "$1.80 of $5.00 left" in reply.text for reply in refused)
    assert len(fake_genai.video_generation_requests) == 1


async def test_concurrent_text_commands_stop_at_the_budget(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter
) -> None:
    """Many users in one chat at once: exactly as many commands run as the chat budget holds."""
    estimate = story_estimate()
    fits = 7
    budget = estimate * fits + estimate / 2
    runtime = await make_runtime(budget_chat_daily_usd=float(budget), budget_user_daily_usd=0)
    fake_openrouter.latency = 1.5  # all 40 hold their reservation before the first one settles
    replies = await asyncio.gather(
        *(runtime.core.handle(command("story", "a dragon", user=str(u)), RecordingResponder()) for u in range(40))
    )
    assert sum(not reply.is_error for reply in replies) == fits
    assert all("this chat's daily budget" in reply.text for reply in replies if reply.is_error)
    assert len(fake_openrouter.chat_requests) == fits


async def test_a_failed_video_gives_its_budget_back(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime(budget_user_daily_usd=5.0)
    fake_genai.video_outcome = "error"
    failed = await runtime.core.handle(command("video", "a cat duration=8"), RecordingResponder())
    assert failed.is_error and "could not make this video" in failed.text
    fake_genai.video_outcome = "ok"
    done = await runtime.core.handle(command("video", "a cat duration=8"), RecordingResponder())
    assert not done.is_error, done.text
    assert len(fake_genai.video_generation_requests) == 2


async def test_a_refused_upstream_call_gives_the_text_budget_back(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter
) -> None:
    runtime = await make_runtime(budget_user_daily_usd=float(story_estimate() * Decimal("1.5")))
    fake_openrouter.inject(Fault.status(500))
    failed = await runtime.core.handle(command("story", "a dragon"), RecordingResponder())
    assert failed.is_error
    done = await runtime.core.handle(command("story", "a dragon"), RecordingResponder())
    assert not done.is_error, done.text


async def test_a_cancelled_job_gives_its_budget_back(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime(budget_user_daily_usd=5.0)
    assert runtime.jobs is not None
    budgets = runtime.jobs.budgets
    assert budgets is not None
    reservation = await budgets.reserve("telegram:7", "telegram:-100", Decimal("3.20"))
    assert isinstance(reservation, Reservation)
    job_id = await runtime.jobs.create_video_job(
        JobAddress("telegram", "-100", "telegram:7", "telegram:-100"),
        VideoRequest(prompt="a cat", duration_seconds=8),
        reservation,
    )
    refused = await runtime.core.handle(command("video", "a dog duration=8"), RecordingResponder())
    assert refused.is_error and "daily budget" in refused.text
    cancelled = await runtime.core.handle(command("jobs", f"cancel {job_id[:8]}"), RecordingResponder())
    assert not cancelled.is_error, cancelled.text
    done = await runtime.core.handle(command("video", "a dog duration=8"), RecordingResponder())
    assert not done.is_error, done.text
    assert len(fake_genai.video_generation_requests) == 1


async def test_the_sandbox_is_never_billed(tmp_path: Path) -> None:
    """No keys: /video twice, then /usage shows nothing spent and the next video still runs."""
    settings = load_settings(
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sandbox.sqlite3'}",
        media_dir=tmp_path / "media",
        budget_user_daily_usd=5.0,
    )
    runtime = await start_runtime(settings)
    try:
        assert runtime.sandbox_upstreams == {"text", "media"}

        def spend_metric() -> float:
            total = 0.0
            for metric in REGISTRY.collect():
                if metric.name == "reelwright_spend_usd":
                    total += sum(sample.value for sample in metric.samples if sample.name.endswith("_total"))
            return total

        before = spend_metric()
        for _ in range(3):
            reply = await runtime.core.handle(
                command("video", "a cat duration=8", platform="console"), RecordingResponder()
            )
            assert not reply.is_error, reply.text
        await runtime.core.handle(command("story", "a dragon", platform="console"), RecordingResponder())
        usage = await runtime.core.handle(command("usage", "", platform="console"), RecordingResponder())
        assert "today $0.00 of $5.00" in usage.text, usage.text
        assert runtime.ledger is not None
        await runtime.ledger.flush()
        assert await usage_rows() == 0
        assert spend_metric() == before
    finally:
        await runtime.close()


def test_every_paid_command_declares_an_estimate() -> None:
    commands = catalogue()
    paid = [command for command in commands if command.upstream is not None]
    assert {command.name for command in paid} >= {"story", "video", "thumbnail", "character"}
    for declared in paid:
        assert declared.estimate is not None, declared.name


def test_a_paid_command_without_an_estimate_is_refused_at_start() -> None:
    async def handler(ctx: Any) -> Reply:
        return Reply(blocks=["x"])

    undeclared = Command("gamble", "g", "g", (Option("what", OptionKind.TEXT, "w", rest=True),), handler)
    with pytest.raises(ValueError, match="declares no estimate"):
        CommandSet().add(undeclared)


PAID_EXAMPLES = [
    ("story", "a dragon learns to fly segments=12"),
    ("longstory", "a heist on the moon segments=40"),
    ("storysets", "a cat opens a bakery sets=4 segments=8"),
    ("meme", "mondays at a startup count=5"),
    ("write", "kind=script a vegan ramen recipe"),
    ("trends", "indie game dev count=10"),
    ("character", "Captain Whiskers"),
    ("video", "a cat surfing duration=8"),
    ("thumbnail", "I survived 24 hours in a library"),
    ("short", "a storm at sea segments=8"),
]


def test_every_paid_command_has_a_cost_example() -> None:
    paid = {declared.name for declared in catalogue() if declared.upstream is not None}
    assert paid == {name for name, _ in PAID_EXAMPLES}


@pytest.mark.parametrize(("name", "text"), PAID_EXAMPLES, ids=[name for name, _ in PAID_EXAMPLES])
async def test_estimates_cover_the_real_cost(make_runtime: RuntimeFactory, name: str, text: str) -> None:
    """Generous on purpose: what a command really used (as the fakes report it) never exceeds
    what was reserved for it."""
    runtime = await make_runtime(
        budget_user_daily_usd=0, budget_user_monthly_usd=0, budget_chat_daily_usd=0, budget_chat_monthly_usd=0
    )
    invocation = command(name, text, user=uuid.uuid4().hex[:8])
    if name == "character":
        invocation = Invocation(**{**invocation.__dict__, "image": uploaded(png_bytes())})
    declared = runtime.core.commands.get(name)
    assert declared is not None
    reply = await runtime.core.handle(invocation, RecordingResponder())
    assert not reply.is_error, reply.text
    assert runtime.ledger is not None
    spent = await runtime.ledger.spent("user", invocation.user.key)
    assert spent.today > 0
    args = validate_arguments(declared, parse_text_arguments(declared, text))
    estimate = estimate_cost(declared, args, service_config(), runtime.ledger.prices)
    assert estimate is not None and spent.today <= estimate, (spent.today, estimate)


async def test_a_burst_larger_than_the_redis_pool_waits_for_connections(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter, redis_url: str
) -> None:
    """Past redis-py's default 100 connections, commands wait for a free one instead of failing
    with "Too many connections"."""
    prefix = f"reelwright:test:{uuid.uuid4().hex}"
    runtime = await make_runtime(redis_url=redis_url, redis_key_prefix=prefix, job_queue_name=f"{prefix}:jobs")
    fake_openrouter.latency = 0.2
    replies = await asyncio.gather(
        *(runtime.core.handle(command("write", "a caption", user=str(u)), RecordingResponder()) for u in range(300))
    )
    assert [reply.text for reply in replies if reply.is_error] == []
    assert len(fake_openrouter.chat_requests) == 300


async def test_shared_counters_start_from_what_the_ledger_already_holds(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI, redis_url: str
) -> None:
    """Spend recorded before Redis had a counter (first use, or Redis lost its data) still counts."""
    prefix = f"reelwright:test:{uuid.uuid4().hex}"
    runtime = await make_runtime(
        redis_url=redis_url, redis_key_prefix=prefix, job_queue_name=f"{prefix}:jobs", budget_user_daily_usd=5.0
    )
    assert runtime.ledger is not None
    runtime.ledger.record(
        user_key="telegram:7",
        chat_key="telegram:-100",
        command="video",
        model=service_config().video_model,
        usage=Usage(video_seconds=10),
    )
    await runtime.ledger.flush()
    refused = await runtime.core.handle(command("video", "a cat duration=8"), RecordingResponder())
    assert refused.is_error and "$1.00 of $5.00 left" in refused.text, refused.text
    assert fake_genai.video_generation_requests == []
