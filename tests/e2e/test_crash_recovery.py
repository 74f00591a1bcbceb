"""Kill -9 a bot with a paid video in flight, start it again: the job resumes by its operation
name at once (the restarted process takes back its own lease instead of waiting for it to expire),
the fake Veo sees exactly one generation request, and the video is delivered exactly once. A video
slower than the deadline is announced as late, then delivered once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

BIN = Path(sys.executable).parent


def stats(base: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{base}/_stats", timeout=5) as response:
        routes: dict[str, int] = json.loads(response.read())["routes"]
        return routes


def job_row(db: Path, columns: str) -> tuple[str, ...]:
    with sqlite3.connect(db, timeout=5) as connection:
        [row] = list(connection.execute(f"SELECT {columns} FROM jobs"))
        return tuple(row)


def stored_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def job_states(db: Path) -> list[tuple[str, str | None]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return list(connection.execute("SELECT state, operation_name FROM jobs"))
    except sqlite3.OperationalError:  # not migrated yet
        return []


def wait_for(condition, what: str, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def console(tmp_path: Path, urls: dict[str, str], *, log: Path | None = None, **settings: str) -> subprocess.Popen[str]:
    """``reelwright console`` against the fakes, with the default 90 s job lease, in a session of its
    own (the processes it starts can be found by its group); its log goes to ``log``, if given."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "_BASE_URL"))}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        GOOGLE_API_KEY="test-google-key",
        GENAI_BASE_URL=urls["genai"],
        OPENROUTER_BASE_URL=urls["openrouter"],
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}",
        MEDIA_DIR=str(tmp_path / "media"),
        VIDEO_POLL_INITIAL_SECONDS="0.2",
        VIDEO_POLL_MAX_SECONDS="0.5",
        JOB_SWEEP_SECONDS="0.5",
        **settings,
    )
    with log.open("w") if log is not None else open(os.devnull, "w") as stderr:
        return subprocess.Popen(
            [str(BIN / "reelwright"), "console"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )


def finish(bot: subprocess.Popen[str]) -> list[str]:
    """End the console (its input closed) and return everything it printed."""
    out, _ = bot.communicate(timeout=30)
    return out.splitlines()


def test_sigkill_mid_video_then_restart_delivers_once_and_pays_once(tmp_path: Path, sandbox: dict[str, str]) -> None:
    db = tmp_path / "bot.sqlite3"
    first = console(tmp_path, sandbox)
    assert first.stdin is not None
    first.stdin.write("/video a cat surfing at dawn duration=4\n")
    first.stdin.flush()
    wait_for(lambda: any(state == "running" and op for state, op in job_states(db)), "the operation name to be stored")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert stats(sandbox["genai"]).get("predictLongRunning") == 1
    state, dead_lease_expiry = job_row(db, "state, lease_expires_at")
    assert state == "running"  # killed mid-render: nothing was delivered yet

    second = console(tmp_path, sandbox)
    # Beyond the dead process's 90 s lease: the check below is on when it was delivered, not a timeout.
    wait_for(lambda: [state for state, _ in job_states(db)] == ["delivered"], "the delivery mark", seconds=150)
    lines = finish(second)
    delivered_lines = [line for line in lines if "[video saved:" in line]
    assert len(delivered_lines) == 1
    saved = Path(delivered_lines[0].split("[video saved:", 1)[1].strip(" ]\n"))
    assert saved.read_bytes()[4:8] == b"ftyp"
    assert stats(sandbox["genai"]).get("predictLongRunning") == 1  # resumed by name, never paid twice
    (delivered_at,) = job_row(db, "delivered_at")
    assert stored_time(delivered_at) < stored_time(dead_lease_expiry)  # taken back, not waited out


def test_a_late_video_is_announced_then_delivered_once(tmp_path: Path, sandbox: dict[str, str]) -> None:
    bot = console(tmp_path, sandbox, VIDEO_DEADLINE_SECONDS="1")  # the fake renders for 4 s
    assert bot.stdin is not None and bot.stdout is not None
    bot.stdin.write("/video a slow sunrise duration=4\n")
    bot.stdin.flush()
    db = tmp_path / "bot.sqlite3"
    wait_for(lambda: [state for state, _ in job_states(db)] == ["delivered"], "the job to end")
    lines = finish(bot)
    late = [i for i, line in enumerate(lines) if "taking longer than usual" in line]
    saved = [i for i, line in enumerate(lines) if "[video saved:" in line]
    assert len(late) == 1 and len(saved) == 1 and late[0] < saved[0]
    assert not any("wrong" in line.lower() for line in lines)
    assert stats(sandbox["genai"]).get("predictLongRunning") == 1
