"""`reelwright console` as a user runs it, against an OpenAI-compatible server of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.dispatcher import SANDBOX_FOOTER

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
#: What an idle process of one platform has no use for; each costs from a few to tens of MB.
HEAVY_PACKAGES = ("openai", "google", "discord", "telegram", "PIL", "alembic", "redis", "bot.sandbox", "bot.runtime")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_TOKEN", "_BASE_URL")) and "PROXY" not in key.upper()
    }
    env.update({"NO_PROXY": "127.0.0.1,localhost", "HOME": str(tmp_path), "MEDIA_DIR": str(tmp_path / "media")})
    env.update(extra)
    return env


@pytest.fixture
def own_server() -> Iterator[dict[str, str]]:
    """An OpenAI-compatible server in another process (the fake stands in for e.g. a local LLM server)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox"], stdout=subprocess.PIPE, text=True, env=os.environ | {"NO_PROXY": "*"}
    )
    assert process.stdout is not None
    urls = json.loads(process.stdout.readline())
    yield urls
    process.terminate()
    process.wait(timeout=10)


def test_console_uses_the_configured_openai_compatible_server_without_sandbox_label(
    tmp_path: Path, own_server: dict[str, str]
) -> None:
    result = subprocess.run(
        [str(BIN / "reelwright"), "console"],
        input="/story a dragon learns to fly segments=3\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_env(tmp_path, OPENROUTER_BASE_URL=own_server["openrouter"]),
    )
    assert result.returncode == 0, result.stderr
    assert "3 segments" in result.stdout
    assert SANDBOX_FOOTER not in result.stdout


def test_console_without_any_key_is_labelled_sandbox(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "reelwright"), "console"],
        input="/story a dragon learns to fly\n/video a cat surfing duration=4\n",
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env=clean_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(SANDBOX_FOOTER) == 2
    assert "SANDBOX" in result.stderr
    saved = list((tmp_path / "media").glob("*.mp4"))
    assert len(saved) == 1 and str(saved[0]) in result.stdout


def run_cli(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "reelwright"), command],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_env(tmp_path, **env),
    )


# Nothing listens on port 9 of this machine: were the bot to start serving, it would fail differently.
PLATFORMS = {
    "telegram": {"TELEGRAM_BOT_TOKEN": "123456:not-a-real-token", "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9/bot"},
    "discord": {"DISCORD_BOT_TOKEN": "not.a.real.token", "DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10"},
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_run_with_a_platform_token_and_no_text_key_stops_at_start(tmp_path: Path, platform: str) -> None:
    result = run_cli(tmp_path, "run", **PLATFORMS[platform])
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "OPENROUTER_API_KEY" in result.stderr and "REELWRIGHT_SANDBOX=1" in result.stderr
    assert not (tmp_path / "reelwright.sqlite3").exists()  # stopped before anything was set up


@pytest.mark.parametrize(
    ("command", "media_dir", "problem"),
    [
        ("run", "a-file", "is a file, not a directory"),
        ("console", "a-file/media", "is not a writable directory (Not a directory)"),
        ("worker", "/sys", "is not a writable directory"),  # sysfs takes no new files, not even from root
    ],
)
def test_an_unusable_media_dir_stops_every_entry_point_at_start(
    tmp_path: Path, command: str, media_dir: str, problem: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    path = media_dir if media_dir.startswith("/") else str(tmp_path / media_dir)
    result = run_cli(tmp_path, command, MEDIA_DIR=path, REDIS_URL="redis://127.0.0.1:9/0")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"reelwright: Invalid setting MEDIA_DIR: {path} {problem}"), line
    assert not (tmp_path / "reelwright.sqlite3").exists()


# A bot serving Telegram with a text server of its own: `run` goes straight to start_runtime, and a
# start that got past the checks would fail on port 9 instead, with a different message.
RUN_WITH_TELEGRAM = PLATFORMS["telegram"] | {"OPENROUTER_BASE_URL": "http://127.0.0.1:9/v1"}
UNREACHABLE_REDIS = "redis://127.0.0.1:9/0"
BAD_START_SETTINGS = [
    ("run", "DATABASE_URL", "garbage", "not a database URL"),
    ("console", "DATABASE_URL", "mysql://reelwright:hunter2@127.0.0.1/reelwright", "mysql is not supported"),
    (
        "run",
        "DATABASE_URL",
        "postgresql://postgres:hunter2@127.0.0.1:9/reelwright",
        "at 127.0.0.1:9 (Connection refused)",
    ),
    (
        "console",
        "DATABASE_URL",
        "sqlite:///{tmp}/missing/reelwright.sqlite3",
        "/missing of the SQLite file does not exist",
    ),
    ("worker", "REDIS_URL", "garbage", "not a URL; use redis://"),
    ("worker", "REDIS_URL", UNREACHABLE_REDIS, "cannot connect to Redis at 127.0.0.1:9 (Connection refused)"),
    ("worker", "PRICE_TABLE", '{"m": 5}', 'model "m": must be an object of prices'),
    ("run", "PRICE_TABLE", '{"m": {"input_per_milion": 1}}', "unknown price input_per_milion"),
    ("console", "RATE_LIMIT", "0/minute", "must allow at least 1 command"),
]


def assert_one_line_naming(result: subprocess.CompletedProcess[str], setting: str, problem: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"reelwright: Invalid setting {setting}: "), line
    assert problem in line, line
    assert "hunter2" not in line


@pytest.mark.parametrize(("command", "setting", "value", "problem"), BAD_START_SETTINGS)
def test_a_bad_setting_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, command: str, setting: str, value: str, problem: str
) -> None:
    env = RUN_WITH_TELEGRAM if command == "run" else {}
    if command == "worker" and setting != "REDIS_URL":
        env = {"REDIS_URL": UNREACHABLE_REDIS}
    result = run_cli(tmp_path, command, **env, **{setting: value.replace("{tmp}", str(tmp_path))})
    assert_one_line_naming(result, setting, problem)


def test_a_database_that_does_not_exist_stops_the_worker_with_one_line(tmp_path: Path, postgres_url: str) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/reelwright_no_such_database"
    result = run_cli(tmp_path, "worker", DATABASE_URL=missing, REDIS_URL=UNREACHABLE_REDIS)
    assert_one_line_naming(result, "DATABASE_URL", 'refused: database "reelwright_no_such_database" does not exist')


def heavy_modules_after(code: str) -> list[str]:
    """The modules of HEAVY_PACKAGES loaded once ``code`` has run in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return [name for name in loaded if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY_PACKAGES)]


def test_importing_the_cli_loads_no_platform_sdk_or_bot_layer() -> None:
    assert heavy_modules_after("import bot.cli") == []


def test_help_is_answered_before_the_bot_is_imported() -> None:
    code = (
        "import contextlib, io, bot.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    bot.cli.main(['--help'])"
    )
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize(("platform", "other"), [("telegram", "discord"), ("discord", "telegram")])
def test_one_platform_process_never_loads_the_other_platform_nor_the_ai_sdks(platform: str, other: str) -> None:
    """What ``reelwright run`` imports to serve one platform, before any command has run."""
    loaded = heavy_modules_after(f"import bot.cli, bot.runtime, bot.health, bot.{platform}.app")
    assert not [name for name in loaded if name.split(".")[0] in (other, "openai", "google", "redis")]
    assert not [name for name in loaded if name.startswith("bot.sandbox")]
