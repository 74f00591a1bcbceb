"""Shared budgets under load: two bot processes on one Redis (and one PostgreSQL or SQLite database)
fire N paid /story commands in total, all at once, against a chat budget that holds exactly K of
their estimates. Reports how many were paid (goal: exactly K), how many were refused, the fake's
count of model calls, and the wall time of the burst.

Each process is ``python -m tests.e2e.paid_commands`` (the production runtime fed by the chat core);
the fakes run in a third process (``python -m bot.sandbox``) with latency L, long enough for every
command to be in flight before the first settles, so only the reservations decide who pays.

Run by hand::

    .venv/bin/python bench/bench_budgets.py --n 1000 --k 37 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.core.catalog import build_commands  # noqa: E402
from bot.core.guards import estimate_cost  # noqa: E402
from bot.core.jobs import JobCommands  # noqa: E402
from services.config import ServiceConfig  # noqa: E402
from services.jobs import JobOutcome, JobService  # noqa: E402
from services.pricing import PriceTable  # noqa: E402
from services.queue import JobExecutor, JobQueue  # noqa: E402


async def _nowhere(outcome: JobOutcome) -> None:
    """The bench only reads declarations: no job ever runs."""


def story_estimate() -> Decimal:
    executor = JobExecutor(JobService(Path("bench-media")), _nowhere)
    story = build_commands(jobs=JobCommands(executor.jobs, JobQueue(executor), executor)).get("story")
    assert story is not None
    estimate = estimate_cost(story, {"idea": "a dragon", "segments": 5}, ServiceConfig(), PriceTable())
    assert estimate is not None
    return estimate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="paid commands in total")
    parser.add_argument("--k", type=int, default=37, help="commands the chat budget holds")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--latency", type=float, default=3.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    args = parser.parse_args(argv)

    sandbox = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox", "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ | {"NO_PROXY": "*"},
    )
    assert sandbox.stdout is not None
    urls = json.loads(sandbox.stdout.readline())
    folder = Path(tempfile.mkdtemp(prefix="bench-budgets-"))
    estimate = story_estimate()
    budget = estimate * args.k + estimate / 2
    prefix = f"reelwright:bench:{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "_BASE_URL"))}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT),
        OPENROUTER_API_KEY="bench-key",
        OPENROUTER_BASE_URL=urls["openrouter"],
        GOOGLE_API_KEY="bench-key",
        GENAI_BASE_URL=urls["genai"],
        DATABASE_URL=args.database_url or f"sqlite+aiosqlite:///{folder / 'bench.sqlite3'}",
        REDIS_URL=args.redis_url,
        REDIS_KEY_PREFIX=prefix,
        JOB_QUEUE_NAME=f"{prefix}:jobs",
        MEDIA_DIR=str(folder / "media"),
        BUDGET_CHAT_DAILY_USD=str(budget),
        BUDGET_USER_DAILY_USD="0",
        BUDGET_USER_MONTHLY_USD="0",
        BUDGET_CHAT_MONTHLY_USD="0",
        RATE_LIMIT="100000/minute",
        LOG_LEVEL="WARNING",
    )
    per_process = args.n // args.processes
    errors = (folder / "bots.log").open("w")
    bots = []
    try:
        for _ in range(args.processes):
            bots.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "tests.e2e.paid_commands", "--command", "story"),
                        *("--text", "a dragon", "--n", str(per_process), "--number"),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    text=True,
                    cwd=ROOT,
                    env=env,
                )
            )
        for bot in bots:
            assert bot.stdout is not None
            assert bot.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for bot in bots:
            assert bot.stdin is not None
            bot.stdin.write("go\n")
            bot.stdin.flush()
        results = [json.loads(bot.communicate(timeout=600)[0].strip().splitlines()[-1]) for bot in bots]
        wall = time.perf_counter() - started
        with urllib.request.urlopen(f"{urls['openrouter'].rsplit('/api/', 1)[0]}/_stats") as response:
            calls = json.load(response)["routes"].get("chat", 0)
    finally:
        for bot in bots:
            if bot.poll() is None:
                bot.kill()
        sandbox.terminate()
        sandbox.wait()
    paid = sum(result["paid"] for result in results)
    refused = sum(result["refused"] for result in results)
    print(f"{args.processes} processes, {per_process * args.processes} /story at once, budget for K = {args.k}")
    print(
        f"paid {paid}, refused {refused}, model calls at the fake {calls}, burst wall {wall:.2f} s (L = {args.latency} s)"
    )
    other = [text for result in results for text in result["other"]]
    if other:
        print("other answers:", other[:3], f"(the bots' log: {folder / 'bots.log'})")
    return 0 if paid == calls == args.k and refused == per_process * args.processes - args.k else 1


if __name__ == "__main__":
    raise SystemExit(main())
