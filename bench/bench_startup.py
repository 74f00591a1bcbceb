"""What starting the bot costs: ``reelwright --help`` wall time, and the idle RSS of ``reelwright run``.

* ``--help``: the installed ``reelwright`` script run N times; min and median wall time, peak RSS.
* idle ``run`` with Telegram: the real CLI in its own process against the fake Bot API
  (tests/fakes/telegram_api.py) and the AI fakes, with keys set as in production (so neither the
  sandbox nor any command is involved). Once it starts polling for updates it is left alone for a few
  seconds, then VmRSS is read from /proc/<pid>/status. With ``--imports`` the bot runs under
  ``PYTHONPROFILEIMPORTTIME`` and the heavy packages it loaded are listed (this costs a little RSS).

Run by hand, never by the test suite (figures in docs/benchmarks.md)::

    .venv/bin/python bench/bench_startup.py
    .venv/bin/python bench/bench_startup.py --runs 10 --settle 5 --imports
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRIPT = Path(sys.executable).parent / "reelwright"
TOKEN = "123456789:AAH-benchStartupToken_0123456789abcd"
#: Packages an idle Telegram bot has no use for; ``--imports`` says which of them it loaded.
HEAVY = ("openai", "google.genai", "discord", "PIL", "redis", "bot.sandbox", "alembic", "tests")


def help_runs(runs: int) -> tuple[list[float], int]:
    """Wall seconds of each ``reelwright --help`` and the largest peak RSS (KB) among them."""
    times: list[float] = []
    peak_kb = 0
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen([str(SCRIPT), "--help"], stdout=subprocess.DEVNULL, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        times.append(time.perf_counter() - started)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"reelwright --help exited with {process.returncode}")
        peak_kb = max(peak_kb, usage.ru_maxrss)
    return times, peak_kb


def proc_status_kb(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def loaded_packages(importtime_log: str) -> list[str]:
    """The HEAVY packages named in a ``-X importtime`` log."""
    names = {line.rsplit("|", 1)[-1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}
    return sorted(heavy for heavy in HEAVY if any(name == heavy or name.startswith(heavy + ".") for name in names))


async def idle_run(tmp: str, settle: float, imports: bool) -> tuple[int, int, list[str] | None]:
    """VmRSS and VmHWM (KB) of an idle ``reelwright run`` serving Telegram from ``tmp`` (its database
    and MEDIA_DIR), and what it imported."""
    # Imported here, after the --help runs: a child's peak RSS counts this process's until exec.
    from bot.sandbox.fake_genai import SandboxGenAI
    from bot.sandbox.fake_openrouter import SandboxOpenRouter
    from tests.fakes.telegram_api import FakeTelegramAPI

    telegram = FakeTelegramAPI(TOKEN)
    text, media = SandboxOpenRouter(), SandboxGenAI()
    await telegram.start()
    openrouter_url, genai_url = await text.start(), await media.start()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_TOKEN", "_BASE_URL", "_URL")) and "PROXY" not in key.upper()
    }
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        HOME=tmp,
        MEDIA_DIR=f"{tmp}/media",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/reelwright.sqlite3",
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=telegram.api_base,
        TELEGRAM_FILE_BASE_URL=telegram.file_base,
        OPENROUTER_API_KEY="bench-key",
        OPENROUTER_BASE_URL=openrouter_url,
        GOOGLE_API_KEY="bench-key",
        GENAI_BASE_URL=genai_url,
        LOG_LEVEL="WARNING",
    )
    if imports:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    process = await asyncio.create_subprocess_exec(str(SCRIPT), "run", cwd=tmp, env=env, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    stderr = asyncio.create_task(process.stderr.read())
    try:
        # Polling starts with deleteWebhook (getUpdates calls are not recorded by the fake).
        polling = asyncio.create_task(telegram.wait_for_call("deleteWebhook"))
        exited = asyncio.create_task(process.wait())
        await asyncio.wait({polling, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            polling.cancel()
            raise SystemExit(f"reelwright run exited with {process.returncode}:\n{(await stderr).decode()[-3000:]}")
        await asyncio.sleep(settle)
        rss, hwm = proc_status_kb(process.pid, "VmRSS"), proc_status_kb(process.pid, "VmHWM")
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        log = (await stderr).decode(errors="replace")
        await telegram.stop()
        await text.stop()
        await media.stop()
    if process.returncode != 0:
        raise SystemExit(f"reelwright run exited with {process.returncode}:\n{log[-2000:]}")
    return rss, hwm, loaded_packages(log) if imports else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of reelwright --help")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds the idle bot is left alone")
    parser.add_argument("--imports", action="store_true", help="list the heavy packages the idle bot loaded")
    args = parser.parse_args(argv)

    times, peak_kb = help_runs(args.runs)
    print(
        f"reelwright --help: min {min(times):.3f} s, median {statistics.median(times):.3f} s "
        f"({args.runs} runs), peak RSS {peak_kb / 1024:.0f} MB"
    )
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for start in ("first start (new database, migrated)", "restart (database at the newest migration)"):
            rss, hwm, loaded = asyncio.run(idle_run(tmp, args.settle, args.imports))
            print(
                f"reelwright run (Telegram, idle {args.settle:g} s), {start}: "
                f"VmRSS {rss / 1024:.0f} MB, VmHWM {hwm / 1024:.0f} MB"
            )
            if loaded is not None:
                print(f"  heavy packages loaded while idle: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
