"""A bot process on the production composition root that fires paid commands at once on a signal:
``python -m tests.e2e.paid_commands --command video --text "a cat duration=8" --n 5``.

Settings come from the environment, as for ``reelwright run``. The process prints ``ready`` once the
runtime has started, waits for a line on stdin (so that several processes fire together), sends N
concurrent commands from one user in one chat through the chat core, prints one JSON line
(``{"paid": N, "refused": N, "other": [...]}``) and exits. Used by the two-process budget test and
by ``bench/bench_budgets.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from bot.core.context import ChatRef, Invocation, UserRef
from bot.core.replies import Reply
from bot.runtime import start_runtime
from connectors.settings import load_settings


class _Silent:
    async def show_progress(self, text: str) -> None:
        return None

    async def deliver(self, reply: Reply) -> None:
        return None


async def fire(args: argparse.Namespace) -> dict[str, object]:
    runtime = await start_runtime(load_settings())
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        def invocation(n: int) -> Invocation:
            return Invocation(
                command=args.command,
                user=UserRef(platform="telegram", id=args.user, name="u"),
                chat=ChatRef(platform="telegram", id=args.chat, is_private=False),
                text=f"{args.text} {n}" if args.number else args.text,
            )

        replies = await asyncio.gather(*(runtime.core.handle(invocation(n), _Silent()) for n in range(args.n)))
        refused = [reply for reply in replies if reply.is_error and "budget" in reply.text]
        other = [reply.text for reply in replies if reply.is_error and "budget" not in reply.text]
        return {"paid": sum(not reply.is_error for reply in replies), "refused": len(refused), "other": other[:5]}
    finally:
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.paid_commands", description=__doc__)
    parser.add_argument("--command", default="video")
    parser.add_argument("--text", default="a cat surfing duration=8")
    parser.add_argument("--number", action="store_true", help="append the command's number to its text")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--user", default="7")
    parser.add_argument("--chat", default="-100")
    result = asyncio.run(fire(parser.parse_args(argv)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
