"""The multi-process setup as an operator deploys it: a Telegram bot process and `reelwright worker`
processes sharing PostgreSQL and a Redis queue. Kill -9 the worker while three paid videos render,
start another: every video is delivered exactly once and each was paid for exactly once. Leases are
the default 90 s: the replacement worker (same host, same role, so the same instance id) takes its
predecessor's jobs back at once instead of waiting for them to expire."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fakes.telegram_api import FakeTelegramAPI

BIN = Path(sys.executable).parent
TOKEN = "123456:TEST-distributed-token"


async def start_process(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


@asynccontextmanager
async def fakes_process(*options: str) -> AsyncIterator[dict[str, str]]:
    """``python -m bot.sandbox`` in its own process with ``options``; yields its base URLs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.sandbox",
        *options,
        stdout=asyncio.subprocess.PIPE,
        env=os.environ | {"NO_PROXY": "*"},
    )
    try:
        assert process.stdout is not None
        yield json.loads(await process.stdout.readline())
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture
async def sandbox() -> AsyncIterator[dict[str, str]]:
    async with fakes_process("--video-seconds", "5") as urls:
        yield urls


async def routes(base: str) -> dict[str, int]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{base}/_stats") as response:
        stats: dict[str, Any] = await response.json()
        return dict(stats["routes"])


async def job_states(database_url: str, kinds: tuple[str, ...] = ("video",)) -> list[str]:
    """The states of the jobs of ``kinds`` (the database outlives each test)."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        if not await connection.fetchval("SELECT to_regclass('jobs') IS NOT NULL"):
            return []
        rows = await connection.fetch("SELECT state FROM jobs WHERE kind = ANY($1::text[])", list(kinds))
        return [row["state"] for row in rows]
    finally:
        await connection.close()


async def job_times(database_url: str, column: str) -> list[Any]:
    """``column`` of the video jobs."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return [row[0] for row in await connection.fetch(f"SELECT {column} FROM jobs WHERE kind = 'video'")]
    finally:
        await connection.close()


def deployment(
    tmp_path: Path,
    telegram: FakeTelegramAPI,
    sandbox: dict[str, str],
    postgres_url: str,
    redis_url: str,
    **settings: str,
) -> dict[str, str]:
    """The environment of a bot and its workers on PostgreSQL and Redis against the fakes; a queue
    and budget counters of this test's own."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "_BASE_URL"))}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=telegram.api_base,
        TELEGRAM_FILE_BASE_URL=telegram.file_base,
        TELEGRAM_LOCAL_API="false",
        OPENROUTER_BASE_URL=sandbox["openrouter"],
        GOOGLE_API_KEY="test-google-key",
        GENAI_BASE_URL=sandbox["genai"],
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        JOB_QUEUE_NAME=f"reelwright:e2e:{uuid.uuid4().hex}",
        REDIS_KEY_PREFIX=f"reelwright:e2e:{uuid.uuid4().hex}",
        MEDIA_DIR=str(tmp_path / "media"),
        CONFIRM_ABOVE_USD="0",
        VIDEO_POLL_INITIAL_SECONDS="0.2",
        VIDEO_POLL_MAX_SECONDS="0.5",
        JOB_SWEEP_SECONDS="0.5",
        **settings,
    )
    return env


async def shut_down(
    *running: asyncio.subprocess.Process | None, killed: asyncio.subprocess.Process, telegram: FakeTelegramAPI
) -> None:
    """End the test's processes (the killed worker too, should the test have stopped before it) and
    the fake Telegram."""
    for process in running:
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()
    if killed.returncode is None:
        killed.kill()
        await killed.wait()
    await telegram.stop()


async def until(condition: Any, what: str, attempts: int = 1200) -> None:
    """Poll state held by other processes (no event crosses a process boundary), bounded."""
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_a_worker_mid_render_on_postgres_and_redis(
    tmp_path: Path, sandbox: dict[str, str], postgres_url: str, redis_url: str
) -> None:
    telegram = FakeTelegramAPI(TOKEN)
    await telegram.start()
    env = deployment(tmp_path, telegram, sandbox, postgres_url, redis_url)
    bot = await start_process(str(BIN / "reelwright"), "run", env=env, cwd=tmp_path)
    worker = await start_process(str(BIN / "reelwright"), "worker", env=env, cwd=tmp_path)
    replacement = None
    try:
        await telegram.wait_for_call("setMyCommands")
        for chat in (101, 102, 103):
            await telegram.send_command(chat, f"/video clip for chat {chat} duration=4")

        async def three_rendering() -> bool:
            return (await routes(sandbox["genai"])).get("predictLongRunning", 0) == 3 and sorted(
                await job_states(postgres_url)
            ) == ["running"] * 3

        await until(three_rendering, "three videos to be rendering")
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        dead_leases_expire = min(await job_times(postgres_url, "lease_expires_at"))
        replacement = await start_process(str(BIN / "reelwright"), "worker", env=env, cwd=tmp_path)

        async def all_delivered() -> bool:
            return sorted(await job_states(postgres_url)) == ["delivered"] * 3

        # Beyond the dead worker's 90 s leases: the check is on when they were delivered, not a timeout.
        await until(all_delivered, "every job to be delivered", attempts=3000)
        assert max(await job_times(postgres_url, "delivered_at")) < dead_leases_expire  # taken back at once
        videos = telegram.calls_of("sendVideo")
        assert sorted(call.chat_id for call in videos) == [101, 102, 103]
        assert (await routes(sandbox["genai"]))["predictLongRunning"] == 3
    finally:
        await shut_down(bot, replacement, killed=worker, telegram=telegram)


async def test_a_short_on_a_worker_killed_mid_render_is_finished_by_the_next_worker(
    tmp_path: Path, sandbox: dict[str, str], postgres_url: str, redis_url: str
) -> None:
    """The bot answers at once that the short is queued; a worker makes it. Kill -9 that worker while
    its three clips render: the next worker takes the short back, polls the clips by name, stitches
    and posts the short once, with every clip paid once."""
    telegram = FakeTelegramAPI(TOKEN)
    await telegram.start()
    env = deployment(
        tmp_path,
        telegram,
        sandbox,
        postgres_url,
        redis_url,
        BUDGET_USER_DAILY_USD="100",
        BUDGET_CHAT_DAILY_USD="100",
        SHORT_LONG_SIDE="256",
    )
    bot = await start_process(str(BIN / "reelwright"), "run", env=env, cwd=tmp_path)
    worker = await start_process(str(BIN / "reelwright"), "worker", env=env, cwd=tmp_path)
    replacement = None
    try:
        await telegram.wait_for_call("setMyCommands")
        await telegram.send_command(101, "/short a lighthouse keeper befriends a storm segments=3")

        async def clips_rendering() -> bool:
            states = await job_states(postgres_url, ("short", "clip"))
            return (await routes(sandbox["genai"])).get("predictLongRunning", 0) == 3 and states.count("running") == 4

        await until(clips_rendering, "the short and its three clips to be rendering")
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        replacement = await start_process(str(BIN / "reelwright"), "worker", env=env, cwd=tmp_path)

        async def delivered() -> bool:
            return sorted(await job_states(postgres_url, ("short", "clip"))) == ["delivered"] * 4

        await until(delivered, "the short to be delivered", attempts=3000)
        assert [call.chat_id for call in telegram.calls_of("sendVideo")] == [101]
        assert (await routes(sandbox["genai"]))["predictLongRunning"] == 3
        texts = [str(call.params.get("text", "")) for call in telegram.calls_of("sendMessage")]
        assert any("queued" in text for text in texts), texts
    finally:
        await shut_down(bot, replacement, killed=worker, telegram=telegram)
