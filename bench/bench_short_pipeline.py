"""The whole /short pipeline on the production runtime against the fakes: from the last clip finished to
the upload started.

A 6-segment 9:16 short whose fake Veo returns 720x1280 24 fps 8 s clips (textured, moving, with a tone:
``bench_short.make_clip``), with narration and captions, at Telegram's 50 MB. Two timings of the clips:

- ``together``: every clip finishes at the same moment (the worst case: all six pieces are encoded
  after the last clip, ``STITCH_MAX_CONCURRENT`` at a time);
- ``staggered``: clip *i* finishes ``--gap`` seconds after clip *i-1*, as Veo's clips usually do.

Reported per run: the wall time from the status line "Clips 6/6 rendered" (the last clip stored) to
"Uploading your short" (the reply about to be handed to the platform), the whole short's wall time and
its size (the stitch's CPU per output second is ``bench_short.py``'s). Goal: ≤ 10 s from the last
clip to the upload.

Run by hand, never by the test suite::

    .venv/bin/python bench/bench_short_pipeline.py
    .venv/bin/python bench/bench_short_pipeline.py --timing staggered --gap 4 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Nothing heavy is imported at the top: the stitching and storyboard processes start from this
# module, as they start from ``bot/__main__.py`` in production, and must not import the bot again.

CLIP_SECONDS = 8.0
BUDGET_MB = 50


@cache
def _make_clip() -> Any:
    spec = importlib.util.spec_from_file_location("bench_short", ROOT / "bench" / "bench_short.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_clip


def bench_veo(clips: list[bytes], render: list[float]) -> Any:
    """Veo that answers with real-sized 8 s clips (each segment its own texture), finishing on a schedule."""
    from bot.sandbox.fake_genai import SandboxGenAI

    class BenchVeo(SandboxGenAI):
        def __init__(self) -> None:
            super().__init__(polls_until_done=1)
            self._served = 0
            self._rendered = 0

        def clip(self, seconds: float, aspect: str) -> bytes:
            data = clips[self._served % len(clips)]
            self._served += 1
            return data

        def render_seconds(self, prompt: str) -> float:
            seconds = render[self._rendered % len(render)]
            self._rendered += 1
            return seconds

    return BenchVeo()


class QuietSender:
    """Takes what the bot posts beside the answer (the story, the first-frames sheet)."""

    async def send(self, chat: Any, reply: Any) -> None:
        return None


class TimedResponder:
    """Records when each status line was shown."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    async def show_progress(self, text: str) -> None:
        self.lines.append((time.monotonic(), text))

    async def deliver(self, reply: Any) -> None:
        return None

    def first(self, fragment: str) -> float:
        return next(moment for moment, line in self.lines if fragment in line)


async def run_once(home: Path, clips: list[bytes], render: list[float], segments: int) -> dict[str, float]:
    from bot.core.context import ChatRef, Invocation, UserRef
    from bot.runtime import start_runtime
    from bot.sandbox.fake_openrouter import SandboxOpenRouter
    from connectors.settings import load_settings

    text, media = SandboxOpenRouter(), bench_veo(clips, render)
    await text.start()
    await media.start()
    settings = load_settings(
        _env_file=None,
        openrouter_api_key="bench",
        openrouter_base_url=text.base_url,
        google_api_key="bench",
        genai_base_url=media.base_url,
        database_url=f"sqlite+aiosqlite:///{home / 'bench.sqlite3'}",
        media_dir=home / "media",
        video_poll_initial_seconds=0.2,
        video_poll_max_seconds=0.5,
        budget_user_daily_usd=0,
        budget_user_monthly_usd=0,
        budget_chat_daily_usd=0,
        budget_chat_monthly_usd=0,
        confirm_above_usd=0,
    )
    runtime = await start_runtime(settings)
    runtime.senders["console"] = QuietSender()
    responder = TimedResponder()
    invocation = Invocation(
        command="short",
        user=UserRef("console", "bench"),
        chat=ChatRef("console", "bench"),
        text=f"a lighthouse keeper befriends a storm segments={segments}",
        upload_limit=BUDGET_MB * 1024 * 1024,
    )
    try:
        started = time.monotonic()
        reply = await runtime.core.handle(invocation, responder)
        finished = time.monotonic()
    finally:
        await runtime.close()
        await media.stop()
        await text.stop()
    if reply.is_error:
        raise SystemExit(f"the short failed: {reply.text}")
    video = next(item for item in reply.media if item.kind == "video")
    return {
        "last_clip_to_upload_s": responder.first("Uploading") - responder.first(f"Clips {segments}/{segments}"),
        "total_s": finished - started,
        "size_mb": len(video.data) / 1_048_576,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--timing", choices=("together", "staggered"), default="together")
    parser.add_argument("--render", type=float, default=3.0, help="seconds the first clip takes to render")
    parser.add_argument("--gap", type=float, default=4.0, help="staggered: seconds between two clips finishing")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"making {args.segments} 720x1280 24 fps {CLIP_SECONDS:.0f} s clips…", flush=True)
        clips = []
        for number in range(args.segments):
            path = Path(folder) / f"clip-{number}.mp4"
            _make_clip()(path, CLIP_SECONDS, number)
            clips.append(path.read_bytes())
        gap = args.gap if args.timing == "staggered" else 0.0
        render = [args.render + gap * number for number in range(args.segments)]
        for run in range(args.runs):
            home = Path(folder) / f"run-{run}"
            home.mkdir()
            figures = asyncio.run(run_once(home, clips, render, args.segments))
            print(
                f"{args.timing} run {run + 1}: last clip → upload {figures['last_clip_to_upload_s']:.2f} s "
                f"(goal ≤ 10), whole short {figures['total_s']:.1f} s, {figures['size_mb']:.1f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
