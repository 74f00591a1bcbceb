"""``reelwright``: ``run`` starts every platform that has a token (the console when none has);
``console`` always opens the terminal chat.

The arguments are parsed before anything of the bot is imported, and each ``serve_*`` function
imports only what its process serves: ``--help`` answers at once, and a Telegram bot never loads
discord.py (nor the other way round). tests/bot/test_cli.py checks what importing this module loads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.settings import Settings

log = logging.getLogger("reelwright")

#: Where an interactive console writes its log lines when LOG_FILE is unset: never onto the prompt.
INTERACTIVE_LOG_FILE = Path("reelwright.log")


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.openrouter_api_key,
        settings.google_api_key,
        settings.telegram_bot_token,
        settings.discord_bot_token,
        settings.telegram_webhook_secret,
    ]
    return [value.get_secret_value() for value in values if value is not None]


async def serve_console(settings: Settings) -> int:
    from bot.console.adapter import ConsoleSender, run_console
    from bot.health import start_health_server
    from bot.logging_setup import log_to_file
    from bot.runtime import start_runtime

    runtime = await start_runtime(settings, role="console")
    stop = asyncio.Event()
    maintenance = asyncio.create_task(runtime.run_background(stop))
    try:
        if runtime.sandbox_upstreams:
            print(
                f"🧪 SANDBOX mode ({', '.join(sorted(runtime.sandbox_upstreams))}): no AI key is set, "
                "replies come from a local fake upstream.",
                file=sys.stderr,
                flush=True,
            )
        runtime.senders["console"] = ConsoleSender(sys.stdout, settings.media_dir)
        await start_health_server(runtime, ["console"])
        if sys.stdin.isatty():
            log_file = log_to_file(settings.log_file or INTERACTIVE_LOG_FILE)
            print(f"Log lines go to {log_file}.", file=sys.stderr, flush=True)
        await run_console(runtime.core, settings.media_dir)
    finally:
        stop.set()
        await maintenance
        await runtime.close()
    return 0


async def serve_worker(settings: Settings) -> int:
    """Consume jobs from the Redis queue and deliver them through send-only platform clients."""
    from bot.health import start_health_server
    from bot.runtime import register_send_only_senders, start_runtime

    if not settings.redis_url:
        print("reelwright: `worker` needs REDIS_URL (without it, jobs run inside `reelwright run`)", file=sys.stderr)
        return 2
    runtime = await start_runtime(settings, role="worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await register_send_only_senders(runtime)
    maintenance = asyncio.create_task(runtime.run_background(stop))
    worker = asyncio.create_task(runtime.queue.run_worker())
    try:
        await start_health_server(runtime, list(runtime.senders))
        await stop.wait()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await maintenance
        await runtime.close()
    return 0


async def serve_platforms(settings: Settings) -> int:
    """Serve every platform that has a token, in one process, until SIGINT/SIGTERM."""
    if settings.telegram_bot_token is None and settings.discord_bot_token is None:
        log.info("no TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN: opening the console chat")
        return await serve_console(settings)
    from bot.health import start_health_server
    from bot.runtime import PlatformStartError, start_runtime

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
    maintenance = asyncio.create_task(runtime.run_background(stop))
    try:
        platforms = [
            name
            for name, token in (("telegram", settings.telegram_bot_token), ("discord", settings.discord_bot_token))
            if token
        ]
        await start_health_server(runtime, platforms)
        await asyncio.gather(*servers)
    except PlatformStartError as exc:
        log.error("%s", exc)
        return 2
    finally:
        stop.set()
        await maintenance
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
    sub.add_parser("worker", help="run queued generation jobs from REDIS_URL (for multi-process setups)")
    args = parser.parse_args(argv)
    command = args.command or "run"
    from bot.logging_setup import configure_logging
    from bot.runtime import check_settings
    from connectors.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        check_settings(settings, console=command == "console")
    except SettingsError as exc:
        print(f"reelwright: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, _secrets(settings), settings.log_format, settings.log_file)
    try:
        entry = {"console": serve_console, "worker": serve_worker}.get(command, serve_platforms)
        code = _run(entry(settings))
    except SettingsError as exc:
        print(f"reelwright: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)
