"""``reelwright``: ``run`` starts every platform that has a token (the console when none has);
``console`` always opens the terminal chat."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from bot.console.adapter import run_console
from bot.logging_setup import configure_logging
from bot.runtime import PlatformStartError, start_runtime
from connectors.settings import Settings, SettingsError, load_settings

log = logging.getLogger("reelwright")


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.openrouter_api_key,
        settings.google_api_key,
        settings.telegram_bot_token,
        settings.discord_bot_token,
    ]
    return [value.get_secret_value() for value in values if value is not None]


async def serve_console(settings: Settings) -> int:
    runtime = await start_runtime(settings)
    try:
        if runtime.sandbox_upstreams:
            print(
                f"🧪 SANDBOX mode ({', '.join(sorted(runtime.sandbox_upstreams))}): no AI key is set, "
                "replies come from a local fake upstream.",
                file=sys.stderr,
                flush=True,
            )
        await run_console(runtime.core, settings.media_dir)
    finally:
        await runtime.close()
    return 0


async def serve_platforms(settings: Settings) -> int:
    """Serve every platform that has a token, in one process, until SIGINT/SIGTERM."""
    if settings.telegram_bot_token is None and settings.discord_bot_token is None:
        log.info("no TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN: opening the console chat")
        return await serve_console(settings)
    runtime = await start_runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    servers: list[Coroutine[Any, Any, None]] = []
    if settings.telegram_bot_token is not None:
        from bot.telegram.app import serve_telegram

        servers.append(serve_telegram(runtime, stop))
    if settings.discord_bot_token is not None:
        from bot.discord.app import serve_discord

        servers.append(serve_discord(runtime, stop))
    try:
        await asyncio.gather(*servers)
    except PlatformStartError as exc:
        log.error("%s", exc)
        return 2
    finally:
        stop.set()
        await runtime.close()
    return 0


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reelwright", description="Reelwright: a chat bot for short-video creators")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="serve Telegram/Discord when their tokens are set, else the console chat")
    sub.add_parser("console", help="a terminal chat running the same commands")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"reelwright: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level if args.command != "console" else "WARNING", _secrets(settings))
    command = args.command or "run"
    try:
        code = _run(serve_console(settings) if command == "console" else serve_platforms(settings))
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)
