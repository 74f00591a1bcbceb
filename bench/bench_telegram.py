"""Load benchmark for the Telegram adapter: the real PTB application, chat core, services and SDKs.

Scenarios:

* ``concurrent``: N users (50, 200, 1,000) each send ``/story`` (or ``/write``) at once. Reported:
  wall time / L until every user has the story's text reply, per-message overhead above L (p50,
  p99), CPU ms per command of the bot process, Bot API calls per command, peak RSS, lost replies.
  Storyboards are off here: the goals are for the text reply; their cost has its own line.
* ``storyboard``: the same with the contact sheet drawn (in a thread) and sent, plus the CPU of one
  drawing measured alone.
* ``flood``: the fake enforces 30 messages/s (429 + retry_after beyond it) and the bot's rate
  limiter is at 30/s: no reply may be lost, and at least 90 % of the rate should be used.

Processes: the AI fakes (``python -m bot.sandbox --latency L``) and the fake Bot API (this file with
``--serve-fake``) each run in their own process, so the CPU figures are the bot's alone. The fake
pushes the N updates at once and times each reply on its own clock.

    .venv/bin/python bench/bench_telegram.py                          # everything, table + JSON
    .venv/bin/python bench/bench_telegram.py --scenario concurrent --n 1000 --command write
    .venv/bin/python bench/bench_telegram.py --transport httpx          # PTB's own transport, to compare

JSON results go to ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_story import (  # noqa: E402
    peak_rss_mb,
    percentile,
    raise_fd_limit,
    stop_process,
    storyboard_workers_cpu,
    storyboard_workers_cpu_since,
    storyboard_workers_peak_rss_mb,
    write_results,
)
from bench_storyboard import sheet_cpu_ms  # noqa: E402

from bot.core.dispatcher import ChatCore  # noqa: E402
from bot.logging_setup import configure_logging  # noqa: E402
from bot.runtime import Runtime, start_runtime  # noqa: E402
from bot.sandbox.upstream import RecordedRequest, json_response  # noqa: E402
from bot.telegram.app import TelegramOptions, TelegramService  # noqa: E402
from connectors.settings import load_settings  # noqa: E402
from tests.fakes.telegram_api import RATE_LIMITED_METHODS, ApiCall, FakeTelegramAPI  # noqa: E402

TOKEN = "424242:BENCH-telegram-token_0123456789"
BENCH_KEY = "bench-key"
IDEA = "a shy lighthouse keeper befriends a storm that is afraid of the dark"
COMMANDS = {
    "story": (f"/story {IDEA} segments=5", "segments ·"),
    "write": ("/write a caption for a video about a shy lighthouse keeper", "✍️ Caption"),
}
GOALS = {50: 1.3, 200: 2.5, 1000: 10.0}
CPU_GOAL_MS = 10.0
FIRST_CHAT = 1_000_000


# -- the fake Bot API, in its own process ------------------------------------------------------------


class BenchTelegramAPI(FakeTelegramAPI):
    """The test fake plus ``POST /_bench/run``: push N commands at once, answer when all are replied."""

    def __init__(self) -> None:
        super().__init__(TOKEN, record_uploads=False)
        self._marker = ""
        self._pending: set[int] = set()
        self._replied: dict[int, float] = {}
        self._all_replied = asyncio.Event()

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if request.path == "/_bench/run":
            return json_response(await self._run(json.loads(recorded.body)))
        return await super().dispatch(request, recorded)

    def on_call(self, call: ApiCall) -> None:
        chat = call.chat_id
        if chat in self._pending and call.answered is not None and self._marker in call.params.get("text", ""):
            self._pending.discard(chat)
            self._replied[chat] = time.monotonic()
            if not self._pending:
                self._all_replied.set()

    async def _run(self, spec: dict[str, Any]) -> dict[str, Any]:
        n, text, self._marker = int(spec["n"]), str(spec["text"]), str(spec["marker"])
        self.rate_limit = spec.get("rate_limit")
        first = int(spec["first_chat"])
        chats = list(range(first, first + n))
        self._pending, self._replied, self._all_replied = set(chats), {}, asyncio.Event()
        self.calls.clear()
        self.throttled = 0
        messages = [self.message(chat, text) for chat in chats]
        pushed = time.monotonic()
        await self.push_many(messages)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_replied.wait(), float(spec["deadline"]))
        await asyncio.sleep(float(spec.get("grace", 0.0)))  # let calls after the reply (storyboards) land
        limited = [c.time for c in self.calls if c.method in RATE_LIMITED_METHODS and c.answered is not None]
        by_method: dict[str, int] = {}
        for call in self.calls:
            by_method[call.method] = by_method.get(call.method, 0) + 1
        return {
            "pushed": pushed,
            "replies": {str(chat): at - pushed for chat, at in self._replied.items()},
            "lost": len(self._pending),
            "calls": len(self.calls),
            "by_method": by_method,
            "throttled": self.throttled,
            "limited_span": (max(limited) - min(limited)) if len(limited) > 1 else 0.0,
            "limited_count": len(limited),
        }


async def serve_fake() -> None:
    fake = BenchTelegramAPI()
    await fake.start()
    sys.stdout.write(json.dumps({"origin": fake.origin}) + "\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


# -- child processes ----------------------------------------------------------------------------------


def start_child(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"{args} exited with {process.returncode} before announcing its URLs")
    return process, json.loads(line)


class Bench:
    def __init__(self, args: argparse.Namespace, ai: dict[str, str], fake_origin: str) -> None:
        self.args = args
        self.ai = ai
        self.fake_origin = fake_origin
        self.runtime: Runtime | None = None
        self.service: TelegramService | None = None
        self.next_chat = FIRST_CHAT

    async def start(self, *, rate: float, storyboards: bool, concurrency: int) -> None:
        settings = load_settings(
            _env_file=None,
            openrouter_api_key=BENCH_KEY,
            openrouter_base_url=self.ai["openrouter"],
            google_api_key=BENCH_KEY,
            genai_base_url=self.ai["genai"],
            telegram_bot_token=TOKEN,
            telegram_api_base_url=f"{self.fake_origin}/bot",
            telegram_file_base_url=f"{self.fake_origin}/file/bot",
            telegram_rate_limit_per_second=rate,
            telegram_concurrent_updates=concurrency,
            telegram_local_api=False,
        )
        self.runtime = await start_runtime(settings)
        if self.args.bare_core:
            # Diagnostic: the same commands without the core's middlewares (quota guards, ledger).
            core = self.runtime.core
            self.runtime.core = ChatCore(core.commands, sandbox_upstreams=core.sandbox_upstreams)
        options = TelegramOptions(transport=self.args.transport, storyboards=storyboards)
        self.service = TelegramService(self.runtime, options)
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.runtime is not None:
            await self.runtime.close()

    async def push(
        self, n: int, command: str, *, rate_limit: float | None = None, grace: float = 0.0
    ) -> dict[str, Any]:
        text, marker = COMMANDS[command]
        spec = {
            "n": n,
            "text": text,
            "marker": marker,
            "first_chat": self.next_chat,
            "rate_limit": rate_limit,
            "deadline": 60 + self.args.latency * 20 + (n / rate_limit if rate_limit else 0),
            "grace": grace,
        }
        self.next_chat += n
        timeout = aiohttp.ClientTimeout(total=None)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{self.fake_origin}/_bench/run", json=spec) as response,
        ):
            result: dict[str, Any] = await response.json()
        return result

    async def measure(self, n: int, command: str, scenario: str, **push: Any) -> dict[str, Any]:
        await self.push(5, command, grace=push.get("grace", 0.0))  # warm the pools and caches up
        cpu_before, workers_before = time.process_time(), storyboard_workers_cpu()
        run = await self.push(n, command, **push)
        cpu = time.process_time() - cpu_before
        workers_cpu = storyboard_workers_cpu_since(workers_before)
        latency = self.args.latency
        times = list(run["replies"].values())
        overheads = [(t - latency) * 1000 for t in times]
        result = {
            "scenario": scenario,
            "command": command,
            "n": n,
            "wall_over_L": (max(times) / latency) if times else None,
            "overhead_p50_ms": percentile(overheads, 0.5),
            "overhead_p99_ms": percentile(overheads, 0.99),
            # the bot's whole CPU: this process plus its storyboard worker processes
            "cpu_ms_per_cmd": (cpu + workers_cpu) * 1000 / n,
            "storyboard_workers_cpu_ms_per_cmd": workers_cpu * 1000 / n,
            "api_calls_per_cmd": run["calls"] / n,
            "by_method": run["by_method"],
            "peak_rss_mb": peak_rss_mb(),
            "storyboard_workers_peak_rss_mb": storyboard_workers_peak_rss_mb(),
            "replies": len(times),
            "lost": run["lost"],
            "throttled_429": run["throttled"],
            "photos": run["by_method"].get("sendPhoto", 0),
        }
        if run["limited_span"]:
            result["messages_per_s"] = (run["limited_count"] - 1) / run["limited_span"]
        return result


async def run(args: argparse.Namespace, ai: dict[str, str], fake_origin: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    scenarios = [args.scenario] if args.scenario != "all" else ["concurrent", "storyboard", "flood"]
    sizes = args.n or [50, 200, 1000]
    for scenario in scenarios:
        bench = Bench(args, ai, fake_origin)
        if scenario == "concurrent":
            await bench.start(rate=1_000_000, storyboards=False, concurrency=max(sizes))
            for n in sizes:
                results.append(await bench.measure(n, args.command, scenario))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        elif scenario == "storyboard":
            await bench.start(rate=1_000_000, storyboards=True, concurrency=max(sizes))
            result = await bench.measure(50, "story", scenario, grace=5.0)
            result["storyboard_cpu_ms_each"] = sheet_cpu_ms()
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
        else:
            await bench.start(rate=30, storyboards=False, concurrency=1024)
            result = await bench.measure(args.flood_users, "write", scenario, rate_limit=30)
            result["rate_used"] = result.get("messages_per_s", 0.0) / 30
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
        await bench.stop()
    return results


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(results: list[dict[str, Any]]) -> str:
    header = (
        "| scenario | N | wall / L | overhead p50 ms | overhead p99 ms | CPU ms/cmd | Bot API calls/cmd "
        "| peak RSS MB (+ storyboard workers) | replies / N | goal |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        if r["scenario"] == "concurrent":
            goal = f"wall ≤ {GOALS.get(r['n'], '?')} L, ≤ {CPU_GOAL_MS:.0f} ms CPU"
        elif r["scenario"] == "storyboard":
            goal = (
                f"text reply timed; {r['photos']} storyboards sent, one takes "
                f"{r['storyboard_cpu_ms_each']:.0f} ms CPU to draw (in a worker process)"
            )
        else:
            goal = f"0 lost, {r['messages_per_s']:.1f} msg/s = {r['rate_used'] * 100:.0f} % of 30 (goal ≥ 90 %)"
        workers_rss = f" + {r['storyboard_workers_peak_rss_mb']:.0f}" if r["storyboard_workers_peak_rss_mb"] else ""
        lines.append(
            f"| {r['scenario']} /{r['command']} | {r['n']} | {_fmt(r['wall_over_L'], 2)} | {_fmt(r['overhead_p50_ms'], 0)} "
            f"| {_fmt(r['overhead_p99_ms'], 0)} | {_fmt(r['cpu_ms_per_cmd'], 2)} | {_fmt(r['api_calls_per_cmd'], 2)} "
            f"| {_fmt(r['peak_rss_mb'], 0)}{workers_rss} | {r['replies']} / {r['n']} | {goal} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("all", "concurrent", "storyboard", "flood"), default="all")
    parser.add_argument("--n", type=int, action="append", help="users (repeatable; default 50, 200, 1000)")
    parser.add_argument("--command", choices=tuple(COMMANDS), default="story")
    parser.add_argument("--latency", type=float, default=1.0, help="AI fake latency L in seconds")
    parser.add_argument("--flood-users", type=int, default=300)
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--bare-core",
        action="store_true",
        help="diagnostic: drop the core's middlewares (guards) to isolate the adapter",
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_loop(coro: Any, use_uvloop: bool) -> tuple[Any, str]:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro), "uvloop"
    return asyncio.run(coro), "asyncio"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    if args.serve_fake:
        run_loop(serve_fake(), True)
        return 0
    configure_logging(args.log_level, [TOKEN])
    sandbox, ai = start_child(["-m", "bot.sandbox", "--latency", str(args.latency)])
    fake, fake_urls = start_child([str(Path(__file__).resolve()), "--serve-fake"])
    try:
        results, loop_name = run_loop(run(args, ai, fake_urls["origin"]), not args.no_uvloop)
    finally:
        stop_process(fake)
        stop_process(sandbox)
    print(
        f"\nL = {args.latency} s, loop = {loop_name}, transport = {args.transport}, {os.cpu_count()} CPUs, "
        f"{'core WITHOUT middlewares, ' if args.bare_core else ''}"
        "AI fakes and Bot API fake in separate processes\n"
    )
    print(markdown_table(results))
    lost = [r for r in results if r["lost"]]
    if not args.no_save:
        path = write_results(results, args, loop_name, f"bench_telegram-{args.scenario}")
        print(f"\nJSON: {path.relative_to(ROOT)}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
