"""Benchmark for durable video jobs: N concurrent Veo jobs against a fake Veo that finishes each
video ``--video-seconds`` after it was submitted (default 60 s).

Reports polls per job per minute (goal ≤ 6), seconds from "done at the fake" to "delivered",
peak RSS, CPU of this process, and that every job was paid for and delivered exactly once. The fake
runs in its own process (``python -m bot.sandbox``); jobs run through the production JobService,
JobExecutor and the in-process taskiq queue on a temporary SQLite database.

    .venv/bin/python bench/bench_jobs.py                 # 100 jobs, 60 s videos
    .venv/bin/python bench/bench_jobs.py --n 20 --video-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from connectors import genai_connector
from connectors.database import close_database, configure_database
from connectors.genai_connector import GenAIConfig
from services.config import ServiceConfig, configure_services
from services.jobs import JobAddress, JobOutcome, JobService
from services.queue import JobExecutor, JobQueue
from services.store.migrate import migrate_to_head
from services.video import VideoRequest


def start_fake(video_seconds: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox", "--video-seconds", str(video_seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"NO_PROXY": "127.0.0.1,localhost"},
    )
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())["genai"]


def fake_stats(base: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base}/_stats", timeout=5) as response:
        stats: dict[str, object] = json.loads(response.read())
        return stats


async def run(n: int, video_seconds: float) -> dict[str, float | int]:
    process, base = start_fake(video_seconds)
    workdir = Path(tempfile.mkdtemp(prefix="reelwright-bench-"))
    try:
        genai_connector.configure_genai(GenAIConfig(api_key="bench-key", base_url=base, timeout_seconds=30))
        configure_services(ServiceConfig())  # production polling: 5 s, x1.5, capped at 20 s
        configure_database(f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}")
        await migrate_to_head()
        delivered_at: dict[str, float] = {}
        all_delivered = asyncio.Event()

        async def deliver(outcome: JobOutcome) -> None:
            delivered_at[outcome.job_id] = time.monotonic()
            if len(delivered_at) == n:
                all_delivered.set()

        service = JobService(workdir / "media")
        queue = JobQueue(JobExecutor(service, deliver), max_concurrent=n)
        await queue.start()
        cpu0, started = time.process_time(), time.monotonic()
        submitted: dict[str, float] = {}
        for index in range(n):
            address = JobAddress("bench", str(index), f"bench:{index}")
            job_id = await service.create_video_job(address, VideoRequest(prompt=f"clip {index}", duration_seconds=8))
            submitted[job_id] = time.monotonic()
            await queue.enqueue(job_id)
        await asyncio.wait_for(all_delivered.wait(), timeout=video_seconds * 4 + 120)
        wall = time.monotonic() - started
        cpu = time.process_time() - cpu0
        await queue.stop()
        stats = fake_stats(base)
        routes = stats["routes"]
        assert isinstance(routes, dict)
        polls = int(routes.get("operation", 0))
        generations = int(routes.get("predictLongRunning", 0))
        lags = [delivered_at[j] - (submitted[j] + video_seconds) for j in submitted]
        minutes_per_job = statistics.mean(delivered_at[j] - submitted[j] for j in submitted) / 60
        return {
            "jobs": n,
            "video_seconds": video_seconds,
            "wall_s": round(wall, 1),
            "generation_requests": generations,
            "delivered": len(delivered_at),
            "polls_per_job": round(polls / n, 2),
            "polls_per_job_per_minute": round(polls / n / minutes_per_job, 2),
            "done_to_delivered_p50_s": round(statistics.median(lags), 2),
            "done_to_delivered_max_s": round(max(lags), 2),
            "cpu_ms_per_job": round(cpu * 1000 / n, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        await genai_connector.close_genai_client()
        await close_database()
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--video-seconds", type=float, default=60.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.n, args.video_seconds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
