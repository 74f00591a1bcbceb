"""Load benchmark for the Discord adapter: N concurrent slash commands through the real discord.py
client, with every other party in its own process.

Processes: the AI fakes (``python -m bot.sandbox --latency L``), the fake Discord (REST + gateway
websocket from ``tests/fakes/discord_api.py``, started by this script with ``--fake-discord``) and
the bot itself (this process: the production ``start_runtime`` + ``serve_discord``, uvloop, a real
bench key so the real openai client and its pool are used). The fake Discord dispatches N
``INTERACTION_CREATE`` events from N distinct users as fast as it can and timestamps, on its own
clock, the dispatch, the deferral (``POST .../callback``) and the final answer (the ``PATCH
@original`` that sets embeds) of each interaction. The bot process measures its CPU and peak RSS.

Figures: wall / L (first dispatch to last final answer), time to the deferral (p50, p99, max),
overhead above L (p50, p99), CPU ms per command (the bot process plus its storyboard worker
processes, also shown apart), REST calls per command, peak RSS,
replies received / N (lost replies) and error replies.

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_discord.py                       # N = 50, 200, 1000; L = 1 s; /story
    .venv/bin/python bench/bench_discord.py --n 200 --command meme

JSON results go to ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)] if str(ROOT) not in sys.path else []

from bench_story import (  # noqa: E402
    Sandbox,
    peak_rss_mb,
    percentile,
    process_cpu_seconds,
    raise_fd_limit,
    start_sandbox,
    stop_process,
    storyboard_workers_cpu,
    storyboard_workers_cpu_since,
    storyboard_workers_peak_rss_mb,
    write_results,
)

from bot.logging_setup import configure_logging  # noqa: E402
from bot.sandbox.upstream import RecordedRequest, json_response  # noqa: E402
from tests.fakes.discord_api import DiscordCall, FakeDiscord  # noqa: E402

BENCH_KEY = "bench-key"
IDEA = "a shy lighthouse keeper befriends a storm that is afraid of the dark"
WARMUP = 5
_TOKEN = re.compile(r"itoken-\d+")

GOALS = {
    50: "deferral ≤ 3 s",
    200: "wall ≤ 2.5 L, deferral ≤ 3 s, ≤ 10 ms CPU/cmd, 0 lost",
    1000: "wall ≤ 10 L, deferral ≤ 3 s, ≤ 10 ms CPU/cmd, 0 lost",
}


# -- the fake Discord, in its own process -------------------------------------------------------------


@dataclass
class Tracked:
    dispatched: float
    deferred: float | None = None
    final: float | None = None
    error: bool = False
    calls: int = 0


@dataclass
class Batch:
    size: int
    items: dict[str, Tracked] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finals: int = 0


class BenchDiscord(FakeDiscord):
    """The test fake plus a control API (``/_bench/...``) that fires batches and reports timings."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: dict[str, Batch] = {}
        self.by_token: dict[str, tuple[Batch, Tracked]] = {}
        self.listeners.append(self._observe)

    def _observe(self, call: DiscordCall) -> None:
        match = _TOKEN.search(call.path)
        if match is None or match.group(0) not in self.by_token:
            return
        batch, item = self.by_token[match.group(0)]
        item.calls += 1
        if call.route == "callback" and item.deferred is None:
            item.deferred = call.time
        elif call.route == "edit_original" and "embeds" in (call.payload or {}) and item.final is None:
            item.final = call.time
            item.error = str(call.payload.get("content") or "").startswith("⚠️")
            batch.finals += 1
            if batch.finals == batch.size:
                batch.done.set()

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if request.path == "/_bench/ready":
            await asyncio.wait_for(self.identified.wait(), 60)
            return json_response({"identified": True, "commands": sum(len(c) for c in self.commands.values())})
        if request.path == "/_bench/fire":
            return json_response(await self._fire(recorded.json))
        if request.path == "/_bench/wait":
            return json_response(await self._wait(request.query["batch"], float(request.query["timeout"])))
        return await super().dispatch(request, recorded)

    async def _fire(self, spec: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"b{len(self.batches)}"
        batch = Batch(size=spec["n"])
        self.batches[batch_id] = batch
        payloads = []
        scope, declared = self._declared(spec["command"])
        for number in range(spec["n"]):
            user = {
                "id": str(1500000000000000000 + spec["first_user"] + number),
                "username": f"user{number}",
                "discriminator": "0",
                "global_name": None,
                "avatar": None,
            }
            options = {
                key: (f"{value} #{number}" if key == spec["text_option"] else value)
                for key, value in spec["options"].items()
            }
            payloads.append(self.interaction_payload(2, self._command_data(scope, declared, options), user=user))
        for d in payloads:
            item = Tracked(dispatched=time.time())
            batch.items[d["token"]] = item
            self.by_token[d["token"]] = (batch, item)
            await self.dispatch_event("INTERACTION_CREATE", d)
            # Let the answers that already arrived be timestamped now, as Discord's servers would.
            await asyncio.sleep(0)
        return {"batch": batch_id}

    @staticmethod
    def _command_data(scope: str | None, declared: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        types = {opt["name"]: opt["type"] for opt in declared.get("options", [])}
        data: dict[str, Any] = {
            "id": declared["id"],
            "name": declared["name"],
            "type": 1,
            "options": [{"name": k, "type": types[k], "value": v} for k, v in options.items()],
        }
        if scope is not None:
            data["guild_id"] = scope
        return data

    async def _wait(self, batch_id: str, limit_seconds: float) -> dict[str, Any]:
        batch = self.batches[batch_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.done.wait(), limit_seconds)
        items = list(batch.items.values())
        start = min(item.dispatched for item in items)
        finals = [item.final for item in items if item.final is not None]
        return {
            "n": batch.size,
            "replies": len(finals),
            "errors": sum(item.error for item in items),
            "wall_s": (max(finals) - start) if finals else None,
            "defer_s": [item.deferred - item.dispatched for item in items if item.deferred is not None],
            "final_s": [item.final - item.dispatched for item in items if item.final is not None],
            "deferred": sum(item.deferred is not None for item in items),
            "rest_calls": sum(item.calls for item in items),
        }


async def serve_fake_discord() -> None:
    fake = BenchDiscord()
    await fake.start()
    sys.stdout.write(
        json.dumps({"api": fake.api_base, "gateway": fake.gateway_url, "origin": fake.origin, "token": fake.token})
        + "\n"
    )
    sys.stdout.flush()
    await asyncio.Event().wait()


@dataclass
class FakeDiscordProcess:
    process: subprocess.Popen[str]
    api: str
    gateway: str
    origin: str
    token: str

    def stop(self) -> None:
        stop_process(self.process)


def start_fake_discord() -> FakeDiscordProcess:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--fake-discord"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"the fake Discord exited with {process.returncode} before announcing its URLs")
    info = json.loads(line)
    return FakeDiscordProcess(process, info["api"], info["gateway"], info["origin"], info["token"])


# -- the bot, in this process -------------------------------------------------------------------------


COMMANDS: dict[str, tuple[dict[str, Any], str]] = {
    "story": ({"idea": IDEA, "segments": 5}, "idea"),
    "meme": ({"topic": "mondays at a lighthouse", "count": 3}, "topic"),
    "write": ({"brief": IDEA, "kind": "caption"}, "brief"),
}


async def run_bench(args: argparse.Namespace, sandbox: Sandbox, fake: FakeDiscordProcess) -> list[dict[str, Any]]:
    from bot.discord.app import serve_discord
    from bot.runtime import start_runtime
    from connectors.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="bench-discord-"))
    settings = load_settings(
        _env_file=None,
        openrouter_api_key=BENCH_KEY,
        openrouter_base_url=sandbox.openrouter,
        google_api_key=BENCH_KEY,
        genai_base_url=sandbox.genai,
        discord_bot_token=fake.token,
        discord_api_base_url=fake.api,
        discord_gateway_url=fake.gateway,
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}",
        media_dir=workdir / "media",
    )
    runtime = await start_runtime(settings)
    if runtime.sandbox_upstreams:
        raise RuntimeError("the bench must not run in sandbox mode")
    stop = asyncio.Event()
    bot = asyncio.create_task(serve_discord(runtime, stop))
    options, text_option = COMMANDS[args.command]
    results = []
    first_user = 0
    try:
        async with ClientSession(timeout=ClientTimeout(total=None)) as http:
            async with http.get(f"{fake.origin}/_bench/ready") as response:
                await response.json()

            async def batch(n: int) -> dict[str, Any]:
                nonlocal first_user
                spec = {
                    "n": n,
                    "command": args.command,
                    "options": options,
                    "text_option": text_option,
                    "first_user": first_user,
                }
                first_user += n
                async with http.post(f"{fake.origin}/_bench/fire", json=spec) as response:
                    batch_id = (await response.json())["batch"]
                timeout = max(60.0, 30 * args.latency)
                async with http.get(
                    f"{fake.origin}/_bench/wait", params={"batch": batch_id, "timeout": str(timeout)}
                ) as response:
                    result: dict[str, Any] = await response.json()
                return result

            warm = await batch(WARMUP)
            if warm["replies"] != WARMUP or warm["errors"]:
                raise RuntimeError(f"warm-up failed: {warm['replies']} replies, {warm['errors']} errors")
            for n in args.n or [50, 200, 1000]:
                cpu0, workers0 = time.process_time(), storyboard_workers_cpu()
                others0 = [process_cpu_seconds(p.pid) for p in (fake.process, sandbox.process)]
                raw = await batch(n)
                cpu = time.process_time() - cpu0
                workers_cpu = storyboard_workers_cpu_since(workers0)
                others1 = [process_cpu_seconds(p.pid) for p in (fake.process, sandbox.process)]
                fake_cpu = [
                    None if a is None or b is None else (b - a) * 1000 / n
                    for a, b in zip(others0, others1, strict=True)
                ]
                overheads = [(value - args.latency) * 1000 for value in raw["final_s"]]
                result = {
                    "scenario": f"concurrent-{n}",
                    "command": args.command,
                    "n": n,
                    "latency_s": args.latency,
                    "wall_s": raw["wall_s"],
                    "wall_over_L": raw["wall_s"] / args.latency if raw["wall_s"] else None,
                    "defer_p50_ms": percentile(raw["defer_s"], 0.5) * 1000,
                    "defer_p99_ms": percentile(raw["defer_s"], 0.99) * 1000,
                    "defer_max_ms": max(raw["defer_s"], default=0.0) * 1000,
                    "deferred": raw["deferred"],
                    "overhead_p50_ms": percentile(overheads, 0.5),
                    "overhead_p99_ms": percentile(overheads, 0.99),
                    # the bot's whole CPU: this process plus its storyboard worker processes
                    "cpu_ms_per_cmd": (cpu + workers_cpu) * 1000 / n,
                    "bot_process_cpu_ms_per_cmd": cpu * 1000 / n,
                    "storyboard_workers_cpu_ms_per_cmd": workers_cpu * 1000 / n,
                    "rest_calls_per_cmd": raw["rest_calls"] / n,
                    # the fakes' own CPU (other processes, not part of the goal), to see whether they limit the run
                    "discord_fake_cpu_ms_per_cmd": fake_cpu[0],
                    "ai_fake_cpu_ms_per_cmd": fake_cpu[1],
                    "peak_rss_mb": peak_rss_mb(),
                    "storyboard_workers_peak_rss_mb": storyboard_workers_peak_rss_mb(),
                    "replies": raw["replies"],
                    "errors": raw["errors"],
                }
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    finally:
        stop.set()
        await bot
        await runtime.close()
    return results


# -- reporting ----------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(results: list[dict[str, Any]]) -> str:
    header = (
        "| N | wall / L | defer p50 ms | defer p99 ms | defer max ms | overhead p50 ms | overhead p99 ms "
        "| CPU ms/cmd (bot + workers) | REST calls/cmd | peak RSS MB (bot + workers) | replies / N | errors | goal |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        lines.append(
            f"| {r['n']} | {_fmt(r['wall_over_L'], 2)} | {_fmt(r['defer_p50_ms'])} | {_fmt(r['defer_p99_ms'])} "
            f"| {_fmt(r['defer_max_ms'])} | {_fmt(r['overhead_p50_ms'])} | {_fmt(r['overhead_p99_ms'])} "
            f"| {_fmt(r['cpu_ms_per_cmd'], 2)} ({_fmt(r['bot_process_cpu_ms_per_cmd'], 2)} + "
            f"{_fmt(r['storyboard_workers_cpu_ms_per_cmd'], 2)}) | {_fmt(r['rest_calls_per_cmd'], 2)} "
            f"| {_fmt(r['peak_rss_mb'])} + {_fmt(r['storyboard_workers_peak_rss_mb'])} "
            f"| {r['replies']} / {r['n']} | {r['errors']} | {GOALS.get(r['n'], '')} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--n", type=int, action="append", help="concurrent interactions (repeatable; default 50, 200, 1000)"
    )
    parser.add_argument("--latency", type=float, default=1.0, help="AI fake latency L in seconds")
    parser.add_argument("--command", choices=sorted(COMMANDS), default="story")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--fake-discord", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fake_discord:
        try:
            import uvloop

            uvloop.run(serve_fake_discord())
        except ImportError:
            asyncio.run(serve_fake_discord())
        return 0
    raise_fd_limit()
    configure_logging(args.log_level)
    sandbox = start_sandbox(args.latency)
    fake = start_fake_discord()
    loop_name = "asyncio"
    try:
        coro = run_bench(args, sandbox, fake)
        try:
            import uvloop

            results, loop_name = uvloop.run(coro), "uvloop"
        except ImportError:
            results = asyncio.run(coro)
    finally:
        fake.stop()
        sandbox.stop()
    print(
        f"\n/{args.command}, L = {args.latency} s, loop = {loop_name}, {os.cpu_count()} CPUs, AI fakes and Discord fake in separate processes\n"
    )
    print(markdown_table(results))
    if not args.no_save:
        path = write_results(results, args, loop_name, f"bench_discord-{args.command}")
        print(f"\nJSON: {path.relative_to(ROOT)}")
    lost = [r for r in results if r["replies"] != r["n"] or r["errors"]]
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
