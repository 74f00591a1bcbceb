"""Load benchmark for /story and /longstory through the real chat core, services and openai SDK.

What it measures: N concurrent ``/story`` commands from N distinct users (wall time in units of the
upstream latency L, per-command overhead above L, CPU per command of this process, TCP connections
the fake upstream accepted, peak RSS, lost replies, errors); one 40-segment ``/longstory`` (wall
time / L, the design being an outline then every chunk at once, so about 2 L); and 100 sequential
``/story`` commands (connections opened, expected 1, and mean overhead).

The upstream is ``python -m bot.sandbox`` started in a separate process, so its CPU is not counted
here; the bot side is the production runtime (``start_runtime``) with a non-sandbox key pointed at
it, so the real ``AsyncOpenAI`` client and its connection pool are exercised.

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_story.py                      # all scenarios, table + JSON
    .venv/bin/python bench/bench_story.py --scenario concurrent --n 1000
    .venv/bin/python bench/bench_story.py --scenario longstory --latency 1.0
    .venv/bin/python bench/bench_story.py --scenario sequential --n 100

JSON results go to ``bench/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.context import ChatRef, Invocation, UserRef
from bot.core.dispatcher import ChatCore
from bot.core.replies import Reply
from bot.logging_setup import configure_logging
from bot.runtime import Runtime, start_runtime
from connectors.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_KEY = "bench-key"
IDEA = "a shy lighthouse keeper befriends a storm that is afraid of the dark"
WARMUP = 5

GOALS: dict[str, str] = {
    "concurrent-200": "wall ≤ 1.5 L, ≤ 2.5 ms CPU/cmd, ≤ N connections",
    "concurrent-1000": "wall ≤ 3 L, ≤ 2.5 ms CPU/cmd, ≤ N connections",
    "longstory": "wall ≤ 2.2 L",
    "sequential": "1 connection",
}


# -- the fake upstream, in its own process --------------------------------------------------------


@dataclass
class Sandbox:
    """The ``python -m bot.sandbox`` child process and the URLs it announced."""

    process: subprocess.Popen[str]
    openrouter: str
    genai: str

    def stats(self) -> dict[str, int]:
        """``GET /_stats`` of the fake OpenRouter (this probe itself opens one connection)."""
        with urllib.request.urlopen(f"{self.openrouter}/_stats", timeout=10) as response:
            data: dict[str, int] = json.loads(response.read())
        return data

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the fake's process so far (Linux ``/proc``; None elsewhere)."""
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[str]) -> None:
    """Terminate a child process, killing it if it has not ended 10 s later."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_sandbox(latency: float) -> Sandbox:
    """Start the fakes in a child process and read the JSON line with their base URLs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox", "--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"bot.sandbox exited with {process.returncode} before announcing its URLs")
    urls = json.loads(line)
    return Sandbox(process=process, openrouter=urls["openrouter"], genai=urls["genai"])


def raise_fd_limit() -> None:
    """1000 concurrent connections need more than the common 1024 descriptors (the child inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# -- the bot side ----------------------------------------------------------------------------------


class RecordingResponder:
    """Ignores progress and records when each final reply is delivered; prints nothing."""

    __slots__ = ("delivered_at", "runs")

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self.delivered_at: float | None = None

    async def show_progress(self, text: str) -> None:
        return None

    async def deliver(self, reply: Reply) -> None:
        self.delivered_at = time.perf_counter()
        self.runs.replies += 1
        if reply.is_error:
            self.runs.errors += 1
            if len(self.runs.error_samples) < 5:
                self.runs.error_samples.append(reply.text[:200])


@dataclass
class Runs:
    replies: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


def invocation(command: str, user_number: int, text: str) -> Invocation:
    user = UserRef(platform="bench", id=str(user_number), name=f"user{user_number}")
    return Invocation(command=command, user=user, chat=ChatRef(platform="bench", id=str(user_number)), text=text)


async def timed(core: ChatCore, inv: Invocation, runs: Runs, submitted: float) -> float:
    """Latency from submission to the final delivery, in seconds."""
    responder = RecordingResponder(runs)
    await core.handle(inv, responder)
    delivered = responder.delivered_at if responder.delivered_at is not None else time.perf_counter()
    return delivered - submitted


async def open_runtime(sandbox: Sandbox, redis_url: str | None = None) -> Runtime:
    """The production runtime with production defaults, pointed at the fake with a real (bench) key;
    with ``redis_url`` budgets and rate limits are kept in Redis, as for several processes."""
    shared: dict[str, Any] = {}
    if redis_url:
        prefix = f"reelwright:bench:{os.getpid()}:{time.time_ns()}"
        shared = {"redis_url": redis_url, "redis_key_prefix": prefix, "job_queue_name": f"{prefix}:jobs"}
    settings = load_settings(
        _env_file=None,
        openrouter_api_key=BENCH_KEY,
        openrouter_base_url=sandbox.openrouter,
        google_api_key=BENCH_KEY,
        genai_base_url=sandbox.genai,
        **shared,
    )
    runtime = await start_runtime(settings)
    if runtime.sandbox_upstreams:
        raise RuntimeError(f"the bench must not run in sandbox mode: {sorted(runtime.sandbox_upstreams)}")
    return runtime


def story_text(user_number: int, segments: int = 5) -> str:
    return f"{IDEA} #{user_number} segments={segments}"


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of another process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def storyboard_workers_cpu() -> dict[int, float]:
    """CPU seconds so far of each storyboard worker process, by pid: part of the bot's cost."""
    from bot.core.storyboard import storyboard_worker_pids

    seconds = {pid: process_cpu_seconds(pid) for pid in storyboard_worker_pids()}
    return {pid: value for pid, value in seconds.items() if value is not None}


def storyboard_workers_cpu_since(before: dict[int, float]) -> float:
    """CPU the storyboard workers spent since ``before`` (a worker started since counts whole)."""
    return sum(value - before.get(pid, 0.0) for pid, value in storyboard_workers_cpu().items())


def storyboard_workers_peak_rss_mb() -> float:
    """Sum of the storyboard workers' peak RSS (``VmHWM``), 0 where /proc is missing."""
    from bot.core.storyboard import storyboard_worker_pids

    total = 0.0
    for pid in storyboard_worker_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


async def warm_up(core: ChatCore, *, concurrent: bool) -> None:
    """A few commands first, so imports, the client and the first connections are not measured."""
    runs = Runs()
    now = time.perf_counter()
    if concurrent:
        await asyncio.gather(
            *(timed(core, invocation("story", -i - 1, story_text(i)), runs, now) for i in range(WARMUP))
        )
    else:
        for i in range(WARMUP):
            await timed(core, invocation("story", -i - 1, story_text(i)), runs, time.perf_counter())
    if runs.errors or runs.replies != WARMUP:
        raise RuntimeError(f"warm-up failed: {runs.replies} replies, {runs.errors} errors: {runs.error_samples}")


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counter differences (the fake's per-route breakdown is left out: only totals matter here)."""
    return {key: after.get(key, 0) - before.get(key, 0) for key in after if isinstance(after[key], int)}


# -- scenarios -------------------------------------------------------------------------------------


async def scenario_concurrent(sandbox: Sandbox, n: int, latency: float, redis_url: str | None = None) -> dict[str, Any]:
    runtime = await open_runtime(sandbox, redis_url)
    try:
        await warm_up(runtime.core, concurrent=True)
        before = await asyncio.to_thread(sandbox.stats)
        runs = Runs()
        invocations = [invocation("story", i, story_text(i)) for i in range(n)]
        fake_cpu0 = sandbox.cpu_seconds()
        cpu0, t0 = time.process_time(), time.perf_counter()
        latencies = await asyncio.gather(*(timed(runtime.core, inv, runs, t0) for inv in invocations))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        fake_cpu1 = sandbox.cpu_seconds()
        after = await asyncio.to_thread(sandbox.stats)
    finally:
        await runtime.close()
    moved = delta(after, before)
    overheads_ms = [(value - latency) * 1000 for value in latencies]
    return {
        "scenario": f"concurrent-{n}" + ("-redis" if redis_url else ""),
        "n": n,
        "latency_s": latency,
        "wall_s": wall,
        "wall_over_L": wall / latency,
        "overhead_p50_ms": percentile(overheads_ms, 0.50),
        "overhead_p99_ms": percentile(overheads_ms, 0.99),
        "overhead_max_ms": max(overheads_ms),
        "cpu_ms_per_cmd": cpu * 1000 / n,
        # the fake's own CPU (other process, not part of the goal), to see whether it limits the run
        "fake_cpu_ms_per_cmd": None if fake_cpu0 is None or fake_cpu1 is None else (fake_cpu1 - fake_cpu0) * 1000 / n,
        "upstream_requests": moved["requests"],
        # connections carrying API calls that were first used after the warm-up
        "connections_new": moved.get("api_connections", moved["connections"] - 1),
        "connections_accepted_raw": moved["connections"] - 1,  # minus the closing /_stats probe
        "peak_rss_mb": peak_rss_mb(),
        "replies": runs.replies,
        "errors": runs.errors,
        "error_samples": runs.error_samples,
    }


async def scenario_longstory(sandbox: Sandbox, segments: int, latency: float) -> dict[str, Any]:
    runtime = await open_runtime(sandbox)
    try:
        await warm_up(runtime.core, concurrent=True)
        before = await asyncio.to_thread(sandbox.stats)
        runs = Runs()
        inv = invocation("longstory", 0, f"{IDEA} segments={segments}")
        cpu0, t0 = time.process_time(), time.perf_counter()
        wall = await timed(runtime.core, inv, runs, t0)
        cpu = time.process_time() - cpu0
        after = await asyncio.to_thread(sandbox.stats)
    finally:
        await runtime.close()
    moved = delta(after, before)
    return {
        "scenario": "longstory",
        "n": 1,
        "segments": segments,
        "latency_s": latency,
        "wall_s": wall,
        "wall_over_L": wall / latency,
        "overhead_p50_ms": (wall - 2 * latency) * 1000,  # above the designed 2 L
        "cpu_ms_per_cmd": cpu * 1000,
        "upstream_requests": moved["requests"],
        "connections_new": moved.get("api_connections", moved["connections"] - 1),
        "peak_rss_mb": peak_rss_mb(),
        "replies": runs.replies,
        "errors": runs.errors,
        "error_samples": runs.error_samples,
    }


async def scenario_sequential(sandbox: Sandbox, n: int, latency: float) -> dict[str, Any]:
    start = await asyncio.to_thread(sandbox.stats)
    runtime = await open_runtime(sandbox)
    try:
        await warm_up(runtime.core, concurrent=False)
        before = await asyncio.to_thread(sandbox.stats)
        runs = Runs()
        latencies: list[float] = []
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            latencies.append(
                await timed(runtime.core, invocation("story", i, story_text(i)), runs, time.perf_counter())
            )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = await asyncio.to_thread(sandbox.stats)
    finally:
        await runtime.close()
    moved = delta(after, before)
    overheads_ms = [(value - latency) * 1000 for value in latencies]
    return {
        "scenario": "sequential",
        "n": n,
        "latency_s": latency,
        "wall_s": wall,
        "wall_over_L": wall / latency,
        "overhead_mean_ms": statistics.fmean(overheads_ms),
        "overhead_p50_ms": percentile(overheads_ms, 0.50),
        "overhead_p99_ms": percentile(overheads_ms, 0.99),
        "cpu_ms_per_cmd": cpu * 1000 / n,
        "upstream_requests": moved["requests"],
        "connections_new": moved.get("api_connections", moved["connections"] - 1),
        # everything this runtime's client opened, warm-up included: the goal is exactly 1
        "connections_client_total": delta(after, start).get("api_connections", 0),
        "peak_rss_mb": peak_rss_mb(),
        "replies": runs.replies,
        "errors": runs.errors,
        "error_samples": runs.error_samples,
    }


# -- reporting -------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(results: list[dict[str, Any]]) -> str:
    header = (
        "| scenario | wall / L | overhead p50 ms | overhead p99 ms | CPU ms/cmd | fake CPU ms/cmd | requests | new conns "
        "| peak RSS MB | replies / N | errors | goal |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        conns = _fmt(r.get("connections_new"))
        if "connections_client_total" in r:
            conns = f"{r['connections_new']} (total {r['connections_client_total']})"
        p50 = r.get("overhead_p50_ms")
        if r["scenario"] == "sequential":
            p50_text = f"{_fmt(p50, 1)} (mean {_fmt(r['overhead_mean_ms'], 1)})"
        elif r["scenario"] == "longstory":
            p50_text = f"{_fmt(p50, 1)} (vs 2 L)"
        else:
            p50_text = _fmt(p50, 1)
        lines.append(
            f"| {r['scenario']} | {_fmt(r['wall_over_L'], 3)} | {p50_text} | {_fmt(r.get('overhead_p99_ms'), 1)} "
            f"| {_fmt(r['cpu_ms_per_cmd'], 2)} | {_fmt(r.get('fake_cpu_ms_per_cmd'), 2)} "
            f"| {r['upstream_requests']} | {conns} | {_fmt(r['peak_rss_mb'], 1)} "
            f"| {r['replies']} / {r['n']} | {r['errors']} | {GOALS.get(r['scenario'], '')} |"
        )
    return "\n".join(lines)


def write_results(results: list[dict[str, Any]], args: argparse.Namespace, loop_name: str, name: str) -> Path:
    """The run's figures and conditions as JSON in bench/results/ (every bench script uses this)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    payload = {
        "args": vars(args),
        "loop": loop_name,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


# -- entry point -----------------------------------------------------------------------------------


@dataclass
class Plan:
    steps: list[tuple[str, int]]


def plan_for(args: argparse.Namespace) -> Plan:
    if args.scenario == "concurrent":
        return Plan([("concurrent", n) for n in (args.n or [200])])
    if args.scenario == "longstory":
        return Plan([("longstory", args.segments)])
    if args.scenario == "sequential":
        return Plan([("sequential", (args.n or [100])[0])])
    return Plan([("concurrent", 200), ("concurrent", 1000), ("longstory", args.segments), ("sequential", 100)])


async def run(args: argparse.Namespace, sandbox: Sandbox) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for kind, number in plan_for(args).steps:
        if kind == "concurrent":
            result = await scenario_concurrent(sandbox, number, args.latency, args.redis_url)
        elif kind == "longstory":
            result = await scenario_longstory(sandbox, number, args.latency)
        else:
            result = await scenario_sequential(sandbox, number, args.latency)
        print(json.dumps({k: v for k, v in result.items() if k != "error_samples"}), file=sys.stderr, flush=True)
        results.append(result)
    return results


def run_loop(coro: Coroutine[Any, Any, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], str]:
    """uvloop when importable, as the product does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro), "asyncio"
    return uvloop.run(coro), "uvloop"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("all", "concurrent", "longstory", "sequential"), default="all")
    parser.add_argument(
        "--n", type=int, action="append", help="commands (concurrent: repeatable, default 200; sequential: 100)"
    )
    parser.add_argument("--latency", type=float, default=1.0, help="fake upstream latency L in seconds")
    parser.add_argument("--segments", type=int, default=40, help="/longstory segments")
    parser.add_argument("--log-level", default="WARNING", help="bot logging level (production runs INFO)")
    parser.add_argument("--no-save", action="store_true", help="do not write JSON to bench/results/")
    parser.add_argument("--redis-url", help="keep budgets and rate limits in this Redis (as several processes do)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.latency <= 0:
        raise SystemExit("--latency must be > 0 (results are reported in units of it)")
    raise_fd_limit()
    configure_logging(args.log_level)
    sandbox = start_sandbox(args.latency)
    try:
        results, loop_name = run_loop(run(args, sandbox))
    finally:
        sandbox.stop()
    print(f"\nL = {args.latency} s, loop = {loop_name}, {os.cpu_count()} CPUs, fake upstream in a separate process\n")
    print(markdown_table(results))
    failures = [r for r in results if r["errors"] or r["replies"] != r["n"]]
    for r in failures:
        print(f"\n{r['scenario']}: {r['errors']} errors, e.g. {r['error_samples'][:2]}")
    if not args.no_save:
        print(f"\nJSON: {write_results(results, args, loop_name, f'bench_story-{args.scenario}').relative_to(ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
