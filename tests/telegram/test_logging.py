"""No bot token in the logs: a whole Telegram session (start, commands, a download, a 429, a refused
call, shutdown) logged at DEBUG through the production logging set-up never shows the token."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.logging_setup import configure_logging
from tests.bot.helpers import png_bytes
from tests.fakes import Fault
from tests.telegram.conftest import TOKEN, TelegramBot


@pytest.fixture
def root_log() -> Iterator[io.StringIO]:
    """Everything the process logs, through ``configure_logging`` (given no secret to redact)."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "httpx2", "httpcore", "aiohttp.access")}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    redactor = configure_logging("DEBUG", secrets=())
    yield stream
    root.handlers = saved_handlers
    root.setLevel(saved_level)
    handler.removeFilter(redactor)
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_the_token_never_reaches_a_log_line(root_log: io.StringIO, start_bot: Any) -> None:
    tg: TelegramBot = await start_bot()
    tg.api.inject_method_fault(Fault.status(429, "Too Many Requests: retry after 1", retry_after=1), "sendChatAction")
    await tg.run(1, "/write a caption")
    await tg.push(tg.api.message(1, caption="/character Tok", photo=tg.api.photo(png_bytes())))
    tg.api.inject_method_fault(Fault.status(400, "Bad Request: chat not found"), "sendMessage")
    await tg.run(2, "/help")
    tg.text.inject(*[Fault.status(500)] * 3)
    await tg.run(3, "/meme logs")
    await tg.service.stop()
    output = root_log.getvalue()
    assert "telegram" in output and "/meme" in output  # the session really was logged
    secret_half = TOKEN.split(":", 1)[1]
    assert TOKEN not in output and secret_half not in output
