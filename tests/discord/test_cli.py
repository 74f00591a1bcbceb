"""``reelwright run`` with DISCORD_BOT_TOKEN: the production composition root serves Discord."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from bot.cli import serve_platforms
from bot.core.dispatcher import SANDBOX_FOOTER
from connectors.settings import load_settings
from tests.fakes.discord_api import FakeDiscord


async def test_run_serves_discord_until_sigterm(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    settings = load_settings(
        _env_file=None,
        discord_bot_token=fake_discord.token,
        discord_api_base_url=fake_discord.api_base,
        discord_gateway_url=fake_discord.gateway_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'reelwright.sqlite3'}",
        media_dir=tmp_path / "media",
        reelwright_sandbox=True,
    )
    served = asyncio.create_task(serve_platforms(settings))
    identified = asyncio.create_task(fake_discord.identified.wait())
    done, _ = await asyncio.wait({served, identified}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    assert identified in done, served.result() if served.done() else "never identified"
    d = await fake_discord.slash("story", {"idea": "a dragon learns to fly", "segments": 2})
    final = await fake_discord.wait_for(
        lambda c: c.route == "edit_original" and d["token"] in c.path and "embeds" in (c.payload or {})
    )
    assert SANDBOX_FOOTER in final.payload["content"]  # no AI key, REELWRIGHT_SANDBOX: the sandbox answered
    os.kill(os.getpid(), signal.SIGTERM)  # serve_platforms installed its handler before serving
    assert await asyncio.wait_for(served, 20) == 0
    assert fake_discord.sockets == []
