"""``reelwright run`` with TELEGRAM_BOT_TOKEN, as an operator starts it (the real CLI in a process)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bot.core.dispatcher import SANDBOX_FOOTER
from tests.bot.test_cli import BIN, clean_env
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
