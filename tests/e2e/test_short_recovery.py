"""Kill -9 a bot with a /short in flight, start it again: the short resumes at once from its rows and
files, every clip is paid once (resumed by its operation name, never submitted again) and the short is
delivered exactly once. Killed while its clips render, and killed during the stitch.

The bot is the installed ``reelwright console`` (started in its own session, so that every process it
starts can be found by its process group), and the AI upstreams are ``python -m bot.sandbox`` in a
process of their own, as a real provider would be.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import av

from tests.e2e.test_crash_recovery import console, stats, wait_for

BIN = Path(sys.executable).parent
IDEA = "/short a cat opens a bakery segments=3\n"


def start_bot(tmp_path: Path, urls: dict[str, str], name: str, long_side: int = 256) -> subprocess.Popen[str]:
    """``reelwright console`` against the fakes, small shorts by default (quick encodes), the default
    90 s lease; its log goes to ``<name>.log``."""
    return console(
        tmp_path,
        urls,
        log=tmp_path / f"{name}.log",
        SHORT_LONG_SIDE=str(long_side),
        BUDGET_USER_DAILY_USD="100",
        BUDGET_CHAT_DAILY_USD="100",
        LOG_LEVEL="INFO",
    )


def kill_and_reap(bot: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the bot alone, as a crash would; wait until every process it started has ended on its own
    (stitch, forkserver, storyboard workers: none may encode on for nobody). Returns what it printed."""
    bot.send_signal(signal.SIGKILL)
    out, _ = bot.communicate(timeout=10)
    wait_for(lambda: not group_members(bot.pid), "the killed bot's child processes to end", seconds=30)
    return out.splitlines()


def group_members(group: int) -> list[int]:
    """Live processes in the process group ``group`` (the killed bot's session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def finish(bot: subprocess.Popen[str]) -> list[str]:
    out, _ = bot.communicate(timeout=30)
    return out.splitlines()


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return list(connection.execute(sql))
    except sqlite3.OperationalError:  # not migrated yet
        return []


def clips(db: Path) -> list[tuple[str, str | None, int, str]]:
    """Each clip's state, operation name, length and id, in segment order."""
    found = rows(db, "SELECT state, operation_name, payload, id FROM jobs WHERE kind = 'clip'")
    parsed = [
        (str(state), op if op is None else str(op), json.loads(str(payload)), str(job_id))
        for state, op, payload, job_id in found
    ]
    parsed.sort(key=lambda clip: int(clip[2]["segment"]))
    return [(state, op, int(payload["duration_seconds"]), job_id) for state, op, payload, job_id in parsed]


def short_row(db: Path) -> tuple[str, str, str | None, str | None]:
    """The short's id, state, delivered_at and lease expiry."""
    [(job_id, state, delivered, lease)] = rows(
        db, "SELECT id, state, delivered_at, lease_expires_at FROM jobs WHERE kind = 'short'"
    )
    return str(job_id), str(state), delivered and str(delivered), lease and str(lease)


def video_usage(db: Path) -> list[int]:
    return sorted(
        int(str(seconds)) for (seconds,) in rows(db, "SELECT video_seconds FROM usage WHERE video_seconds > 0")
    )


def stored_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def saved_videos(lines: list[str]) -> list[Path]:
    return [Path(line.split("[video saved:", 1)[1].strip(" ]")) for line in lines if "[video saved:" in line]


def probe(path: Path) -> tuple[float, int, int]:
    """Duration, video and audio stream counts of a saved MP4."""
    with av.open(str(path)) as container:
        return float(container.duration or 0) / av.time_base, len(container.streams.video), len(container.streams.audio)


def delivered_once(db: Path, lines: list[str], seconds: list[int]) -> None:
    """One saved short of the clips' total length, every row delivered, each clip's seconds billed once."""
    [saved] = saved_videos(lines)
    duration, video_streams, audio_streams = probe(saved)
    assert (video_streams, audio_streams) == (1, 1)
    assert abs(duration - sum(seconds)) <= 0.1
    assert {state for state, *_ in clips(db)} == {"delivered"}
    assert video_usage(db) == sorted(seconds), "each clip's video seconds are in the usage table once"


def test_sigkill_while_clips_render_then_restart_resumes_them_and_pays_once(
    tmp_path: Path, sandbox: dict[str, str]
) -> None:
    db = tmp_path / "bot.sqlite3"
    first = start_bot(tmp_path, sandbox, "first")
    assert first.stdin is not None
    first.stdin.write(IDEA)
    first.stdin.flush()
    # All three submitted (a clip killed mid-submission is failed, not submitted again) and none done.
    wait_for(
        lambda: len(found := clips(db)) == 3 and all(state == "running" and op for state, op, _, _ in found),
        "every clip to be rendering under its operation name",
    )
    at_kill = clips(db)
    _, _, _, dead_lease = short_row(db)
    printed = kill_and_reap(first)
    assert saved_videos(printed) == []
    assert {state for state, *_ in clips(db)} == {"running"}, "killed while the clips rendered"
    assert stats(sandbox["genai"]).get("predictLongRunning") == 3
    polls_before = stats(sandbox["genai"]).get("operation", 0)

    second = start_bot(tmp_path, sandbox, "second")
    # Beyond the dead process's 90 s lease: "at once" is checked on when it was delivered, below.
    wait_for(lambda: short_row(db)[1] == "delivered", "the short to be delivered", seconds=150)
    lines = finish(second)
    assert stats(sandbox["genai"]).get("predictLongRunning") == 3, "no clip was submitted again"
    assert stats(sandbox["genai"]).get("operation", 0) > polls_before
    assert [op for _, op, _, _ in clips(db)] == [op for _, op, _, _ in at_kill], "resumed by operation name"
    delivered_once(db, lines, [seconds for _, _, seconds, _ in at_kill])
    _, _, delivered_at, _ = short_row(db)
    assert delivered_at is not None and dead_lease is not None
    assert stored_time(delivered_at) < stored_time(dead_lease), "taken back at once, not after the lease ran out"


def test_sigkill_during_the_stitch_then_restart_stitches_again_without_new_clips(
    tmp_path: Path, sandbox: dict[str, str]
) -> None:
    db = tmp_path / "bot.sqlite3"
    # Full-size pieces take a second or two each: time enough to kill the bot while it stitches.
    first = start_bot(tmp_path, sandbox, "first", long_side=1280)
    assert first.stdin is not None
    first.stdin.write(IDEA)
    first.stdin.flush()
    partial = tmp_path / "media" / "shorts"

    def stitching() -> bool:
        """Every clip made, and a piece (or the short) being written."""
        if not any(partial.glob("*/.*.mp4.partial")):
            return False
        return {state for state, *_ in clips(db)} == {"succeeded"}

    wait_for(stitching, "the stitch to start writing", seconds=120)
    time_of_kill = time.time()
    printed = kill_and_reap(first)
    short_id, state, delivered, _ = short_row(db)
    work = partial / short_id
    assert (state, delivered) == ("running", None)
    assert saved_videos(printed) == []
    assert not (work / "short.json").exists(), "killed before the short was finished"
    assert not (work / "short.mp4").exists(), "the orphaned stitch did not finish for nobody"
    at_kill = clips(db)
    assert {state for state, *_ in at_kill} == {"succeeded"}
    assert stats(sandbox["genai"]).get("predictLongRunning") == 3

    second = start_bot(tmp_path, sandbox, "second")
    wait_for(lambda: short_row(db)[1] == "delivered", "the short to be delivered", seconds=150)
    lines = finish(second)
    assert stats(sandbox["genai"]).get("predictLongRunning") == 3, "no new Veo calls"
    assert (work / "short.mp4").stat().st_mtime > time_of_kill, "stitched again by the restarted bot"
    assert not (work / ".short.mp4.partial").exists()
    delivered_once(db, lines, [seconds for _, _, seconds, _ in at_kill])
