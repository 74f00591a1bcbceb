"""``reelwright run`` with TELEGRAM_BOT_TOKEN, as an operator starts it (the real CLI in a process)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bot.core.dispatcher import SANDBOX_FOOTER
from tests.bot.test_cli import BIN, clean_env
from tests.fakes.ai import FakeGenAI, FakeOpenRouter
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.telegram.conftest import TOKEN

CHAT = 4242


async def test_run_with_reelwright_sandbox_serves_the_labelled_sandbox_to_a_real_chat(
    tmp_path: Path, telegram_api: FakeTelegramAPI
) -> None:
    """No AI key at all, but the operator asked for the sandbox: it starts, media commands included."""
    env = clean_env(
        tmp_path,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=telegram_api.api_base,
        TELEGRAM_FILE_BASE_URL=telegram_api.file_base,
        REELWRIGHT_SANDBOX="1",
    )
    process = await asyncio.create_subprocess_exec(
        str(BIN / "reelwright"), "run", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        [registered] = await telegram_api.wait_for_call("setMyCommands")
        names = [command["command"] for command in registered.json_param("commands")]
        assert "video" in names and "thumbnail" in names
        await telegram_api.send_command(CHAT, "/story a dragon learns to fly segments=2")
        await telegram_api.wait_for(
            lambda _: any(SANDBOX_FOOTER in call.params.get("text", "") for call in telegram_api.sent_to(CHAT))
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert "SANDBOX" in stderr.decode()


def imported_modules(importtime_log: str) -> set[str]:
    """The module names in a ``python -X importtime`` log."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


async def test_a_telegram_bot_that_served_no_ai_command_has_loaded_no_ai_sdk_nor_discord(
    tmp_path: Path, telegram_api: FakeTelegramAPI, fake_openrouter: FakeOpenRouter, fake_genai: FakeGenAI
) -> None:
    """Keys set as in production; /help needs no provider, so neither SDK (nor the sandbox) is loaded."""
    env = clean_env(
        tmp_path,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=telegram_api.api_base,
        TELEGRAM_FILE_BASE_URL=telegram_api.file_base,
        OPENROUTER_API_KEY="test-key",
        OPENROUTER_BASE_URL=fake_openrouter.base_url,
        GOOGLE_API_KEY="test-key",
        GENAI_BASE_URL=fake_genai.base_url,
        PYTHONPROFILEIMPORTTIME="1",
    )
    process = await asyncio.create_subprocess_exec(
        str(BIN / "reelwright"), "run", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await telegram_api.wait_for_call("setMyCommands")
        await telegram_api.send_command(CHAT, "/help")
        await telegram_api.wait_for(lambda _: bool(telegram_api.sent_to(CHAT)))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log[-3000:]
    loaded = imported_modules(log)
    assert "telegram" in loaded  # the log is the bot's import log
    for package in ("openai", "google.genai", "discord", "bot.sandbox", "redis"):
        assert package not in loaded
