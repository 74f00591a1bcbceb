"""Run both sandbox fakes in one process: ``python -m bot.sandbox --latency 1.0 [--video-seconds 5]``.

Prints one JSON line with the base URLs, then serves until SIGTERM/SIGINT, so a benchmark or a
manual sandbox session can point the bot at them from another process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence

from bot.sandbox.fake_genai import SandboxGenAI
from bot.sandbox.fake_openrouter import SandboxOpenRouter


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox", description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument("--video-seconds", type=float, default=0.0, help="seconds until a video job is done")
    parser.add_argument("--polls-until-done", type=int, default=1, help="polls before a video job is done")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--openrouter-port", type=int, default=0)
    parser.add_argument("--genai-port", type=int, default=0)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start both fakes, announce them, and wait for a termination signal."""
    openrouter = SandboxOpenRouter(latency=args.latency)
    genai = SandboxGenAI(
        latency=args.latency,
        video_seconds=args.video_seconds,
        polls_until_done=args.polls_until_done,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await openrouter.start(host=args.host, port=args.openrouter_port)
        await genai.start(host=args.host, port=args.genai_port)
        sys.stdout.write(json.dumps({"openrouter": openrouter.base_url, "genai": genai.base_url}) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await openrouter.stop()
        await genai.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; uses uvloop when it is installed."""
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
