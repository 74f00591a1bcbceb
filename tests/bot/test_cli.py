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


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith(("_API_KEY", "_TOKEN", "_BASE_URL")) and "PROXY" not in key.upper()
    }
    env.update(NO_PROXY="127.0.0.1,localhost", HOME=str(tmp_path), MEDIA_DIR=str(tmp_path / "media"), **extra)
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
