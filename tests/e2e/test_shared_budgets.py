"""Budgets shared by several bot processes on one PostgreSQL database and one Redis: commands fired
at the same moment from two processes never spend past a budget, and the per-user rate limit is
counted once for all of them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.bot.test_budgets import story_estimate
from tests.e2e.test_distributed_recovery import fakes_process, job_states, routes, sandbox

__all__ = ["sandbox"]


@pytest.fixture
async def slow_sandbox() -> AsyncIterator[dict[str, str]]:
    """The fakes in their own process, answering after 2 s: every command fired is in flight
    before the first one is settled, so only the reservations decide who may pay."""
    async with fakes_process("--latency", "2") as urls:
        yield urls


async def fire_together(tmp_path: Path, env: dict[str, str], processes: int, *args: str) -> list[dict[str, Any]]:
    """Start ``processes`` bot processes, let each fire its commands at the same moment, collect.

    The user and chat are new for each call: the PostgreSQL database is shared by the test session.
    """
    who = ("--user", uuid.uuid4().hex[:12], "--chat", uuid.uuid4().hex[:12])
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.paid_commands",
            *args,
            *who,
            env=env,
            cwd=Path(__file__).parents[2],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line.strip() == b"ready", line
        for process in started:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        results = []
        for process in started:
            out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
            assert process.returncode == 0
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        return results
    finally:
        for process in started:
            if process.returncode is None:
                process.kill()
                await process.wait()


def shared_env(
    tmp_path: Path, sandbox: dict[str, str], postgres_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "_BASE_URL"))}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        OPENROUTER_API_KEY="test-openrouter-key",
        OPENROUTER_BASE_URL=sandbox["openrouter"],
        GOOGLE_API_KEY="test-google-key",
        GENAI_BASE_URL=sandbox["genai"],
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"reelwright:test:{uuid.uuid4().hex}",
        JOB_QUEUE_NAME=f"reelwright:test:{uuid.uuid4().hex}",
        MEDIA_DIR=str(tmp_path / "media"),
        CONFIRM_ABOVE_USD="0",
        VIDEO_POLL_INITIAL_SECONDS="0.2",
        VIDEO_POLL_MAX_SECONDS="0.5",
        RATE_LIMIT="1000/minute",
        PYTHONPATH=str(Path(__file__).parents[2]),
    )
    env.update(extra)
    return env


async def test_two_processes_share_one_budget(
    tmp_path: Path, sandbox: dict[str, str], postgres_url: str, redis_url: str
) -> None:
    """$5 a day, five 8 s clips ($3.20 each) from each of two processes at once: one clip in all
    (queued for a worker, as REDIS_URL makes it), nine clear refusals."""
    env = shared_env(tmp_path, sandbox, postgres_url, redis_url, BUDGET_USER_DAILY_USD="5")
    jobs_before = len(await job_states(postgres_url))
    results = await fire_together(tmp_path, env, 2, "--command", "video", "--text", "a cat duration=8", "--n", "5")
    assert sum(result["paid"] for result in results) == 1, results
    assert sum(result["refused"] for result in results) == 9, results
    assert len(await job_states(postgres_url)) == jobs_before + 1


async def test_two_processes_stop_paid_text_at_the_budget(
    tmp_path: Path, slow_sandbox: dict[str, str], postgres_url: str, redis_url: str
) -> None:
    """A chat budget that holds exactly seven stories: 2 x 20 fired at once make seven paid calls."""
    estimate = story_estimate()
    budget = estimate * 7 + estimate / 2
    env = shared_env(
        tmp_path, slow_sandbox, postgres_url, redis_url, BUDGET_CHAT_DAILY_USD=str(budget), BUDGET_USER_DAILY_USD="0"
    )
    results = await fire_together(tmp_path, env, 2, "--command", "story", "--text", "a dragon", "--n", "20")
    assert sum(result["paid"] for result in results) == 7, results
    assert sum(result["refused"] for result in results) == 33, results
    assert (await routes(slow_sandbox["openrouter"])).get("chat", 0) == 7


async def test_two_processes_share_one_rate_limit(
    tmp_path: Path, sandbox: dict[str, str], postgres_url: str, redis_url: str
) -> None:
    env = shared_env(tmp_path, sandbox, postgres_url, redis_url, RATE_LIMIT="6/minute", BUDGET_USER_DAILY_USD="0")
    results = await fire_together(tmp_path, env, 2, "--command", "write", "--text", "a caption", "--n", "8")
    slowed = [text for result in results for text in result["other"] if "Slow down" in text]
    assert sum(result["paid"] for result in results) == 6, results
    assert len(slowed) >= 5  # "other" keeps the first five messages of each process
    assert (await routes(sandbox["openrouter"])).get("chat", 0) == 6
