"""Every log line of a representative run goes through a secret scanner.

The runtime starts with real-looking keys and tokens configured, the root logger at DEBUG, and
handlers that capture everything: one there before ``configure_logging`` (as in production) and one
a library adds later on its own logger, with no filter of ours. Commands run through the chat core,
faults make the error paths log, and a few lines imitate what libraries are known to log (request
URLs with the Telegram token, exceptions quoting a key). No secret and no ``bot<digits>:<token>``
may appear anywhere in the captured output or in a reply.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bot.logging_setup as logging_setup
from bot.core.context import ChatRef, Invocation, UserRef
from bot.logging_setup import NOISY_LOGGERS, TEXT_FORMAT, JsonFormatter, configure_logging
from bot.runtime import start_runtime
from connectors import genai_connector
from connectors.errors import UpstreamError
from connectors.settings import load_settings
from tests.bot.helpers import RecordingResponder
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

OPENROUTER_KEY = "sk-or-v1-SECRETopenrouter0123456789abcdef"
GOOGLE_KEY = "AIzaSySECRETgoogle0123456789abcdefgh"
TELEGRAM_TOKEN = "123456789:AAsecretTelegramToken_0123456789xyz"
DISCORD_TOKEN = "MTIzNDU2Nzg5.secretDiscordToken.0123456789abcdefXYZ"
WEBHOOK_SECRET = "webhook-SECRET-0123456789"
SECRETS = [OPENROUTER_KEY, GOOGLE_KEY, TELEGRAM_TOKEN, DISCORD_TOKEN, WEBHOOK_SECRET]
TOKEN_PATTERN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


@pytest.fixture
def captured_logs() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Root at DEBUG with a text and a JSON capture handler; everything restored afterwards."""
    root = logging.getLogger()
    saved_level = root.level
    saved_filters = {handler: list(handler.filters) for handler in root.handlers}
    saved_levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    saved_redactor = logging_setup._active_redactor
    text_stream, json_stream = io.StringIO(), io.StringIO()
    text_handler = logging.StreamHandler(text_stream)
    text_handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(text_handler)
    configure_logging("DEBUG", SECRETS, "text")
    # A handler a library adds later, on its own logger, with none of our filters.
    late_handler = logging.StreamHandler(json_stream)
    late_handler.setFormatter(JsonFormatter())
    late_handler.setLevel(logging.DEBUG)
    root.addHandler(late_handler)
    late_handler.filters.clear()
    library = logging.getLogger("telegram.ext.Updater")
    library_handler = logging.StreamHandler(json_stream)
    library.addHandler(library_handler)
    try:
        yield text_stream, json_stream
    finally:
        library.removeHandler(library_handler)
        root.removeHandler(late_handler)
        root.removeHandler(text_handler)
        for handler, filters in saved_filters.items():
            handler.filters = filters
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        logging_setup._active_redactor = saved_redactor


def invocation(name: str, text: str) -> Invocation:
    return Invocation(
        command=name,
        user=UserRef(platform="telegram", id="7", name="u"),
        chat=ChatRef(platform="telegram", id="-100", is_private=False),
        text=text,
    )


async def test_no_secret_reaches_any_log_output_or_reply(
    captured_logs: tuple[io.StringIO, io.StringIO],
    tmp_path: Path,
    fake_openrouter: FakeOpenRouter,
    fake_genai: FakeGenAI,
) -> None:
    text_stream, json_stream = captured_logs
    values: dict[str, Any] = {
        "openrouter_api_key": OPENROUTER_KEY,
        "openrouter_base_url": fake_openrouter.base_url,
        "google_api_key": GOOGLE_KEY,
        "genai_base_url": fake_genai.base_url,
        "telegram_bot_token": TELEGRAM_TOKEN,
        "discord_bot_token": DISCORD_TOKEN,
        "telegram_webhook_secret": WEBHOOK_SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'scan.sqlite3'}",
        "media_dir": tmp_path / "media",
        "text_max_retries": 1,
        "circuit_failure_threshold": 3,
    }
    runtime = await start_runtime(load_settings(_env_file=None, **values))
    replies: list[str] = []
    try:
        fake_openrouter.inject(
            Fault.status(500),
            Fault.status(429, retry_after=0.01),
            Fault.status(401, message=f"key {OPENROUTER_KEY[:12]}… refused"),
            Fault.malformed_json(),
            Fault.reset(),
            Fault.error_body_200(502),
            Fault.status(503),
            Fault.status(503),
            Fault.status(503),
            Fault.status(503),
        )
        commands = [
            ("story", "a dragon learns to fly segments=2"),
            ("write", "kind=caption a vegan ramen recipe"),
            ("trends", "indie game dev count=2"),
            ("meme", "mondays at a startup count=1"),
        ] * 4
        for name, arguments in commands:
            responder = RecordingResponder()
            reply = await runtime.core.handle(invocation(name, arguments), responder)
            replies.append("\n".join([*reply.blocks, reply.footer]))
        fake_genai.inject(Fault.status(403), Fault.status(500), route="predictLongRunning")
        for _ in range(2):
            with pytest.raises(UpstreamError):
                await genai_connector.start_video(model="veo-3", prompt="x", duration_seconds=8, aspect_ratio="9:16")
        name = await genai_connector.start_video(model="veo-3", prompt="x", duration_seconds=8, aspect_ratio="9:16")
        await genai_connector.poll_video(name)

        # What libraries are known to log.
        logging.getLogger("telegram.ext.Updater").warning(
            "Network error: https://api.telegram.org/bot%s/getUpdates failed", TELEGRAM_TOKEN
        )
        logging.getLogger("httpx").warning(
            'HTTP Request: POST https://api.telegram.org/bot%s/sendMessage "200"', TELEGRAM_TOKEN
        )
        logging.getLogger("discord.client").error("login failed with token %r", DISCORD_TOKEN)
        try:
            raise PermissionError(f"401 for key {GOOGLE_KEY} with Authorization: Bearer {OPENROUTER_KEY}")
        except PermissionError:
            logging.getLogger("google_genai.models").exception("request failed")
        logging.getLogger("openai._base_client").debug(
            "Request options: headers=%s", {"Authorization": f"Bearer {OPENROUTER_KEY}"}
        )
    finally:
        await runtime.close()

    output = text_stream.getvalue() + json_stream.getvalue()
    assert "/story from telegram:7" in output and "Traceback" in output  # the capture really captured
    assert output.count("circuit for openrouter opened") >= 1
    for secret in SECRETS:
        assert secret not in output, f"a secret leaked into the logs: {secret[:8]}…"
        assert all(secret not in reply for reply in replies)
    assert not TOKEN_PATTERN.search(output)
    assert "Bearer sk-" not in output
    for line in json_stream.getvalue().splitlines():
        if line.startswith("{"):
            assert set(json.loads(line)) >= {"time", "level", "logger", "correlation_id", "message"}


async def test_one_correlation_id_through_every_layer(
    captured_logs: tuple[io.StringIO, io.StringIO], upstreams: tuple[FakeOpenRouter, FakeGenAI]
) -> None:
    from bot.core.dispatcher import ChatCore
    from connectors.resilience import UpstreamGuardConfig, configure_guard
    from services.memory import UserMemory
    from tests.bot.helpers import catalogue

    text_stream, json_stream = captured_logs
    fake_openrouter, _ = upstreams
    configure_guard("openrouter", UpstreamGuardConfig(failure_threshold=1))
    fake_openrouter.inject(Fault.content("not json"), Fault.status(500))
    core = ChatCore(catalogue(UserMemory()))
    await core.handle(invocation("write", "kind=caption ramen"), RecordingResponder())

    records = [json.loads(line) for line in json_stream.getvalue().splitlines() if line.startswith("{")]
    [started] = [r for r in records if r["logger"] == "bot.core.dispatcher" and "/write from" in r["message"]]
    cid = started["correlation_id"]
    assert re.fullmatch(r"[0-9a-f]{8}", cid) and cid not in started["message"]
    layers = {r["logger"] for r in records if r["correlation_id"] == cid}
    assert {"bot.core.dispatcher", "services.structured", "connectors.resilience"} <= layers
    logging.getLogger("tests").info("after the command")
    after = [json.loads(line) for line in json_stream.getvalue().splitlines() if "after the command" in line]
    assert after and after[-1]["correlation_id"] == "-"
    tagged = [line for line in text_stream.getvalue().splitlines() if cid in line]
    assert tagged and all(line.count(cid) == 1 and f"[{cid}]: " in line for line in tagged)


def test_json_logs_on_request_with_the_correlation_id_and_redaction() -> None:
    """``LOG_FORMAT=json`` on a bare root logger: one redacted JSON object per line."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging_setup._active_redactor)
    saved_levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    root.handlers = []
    try:
        configure_logging("INFO", [GOOGLE_KEY], "json")
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, JsonFormatter)
        stream = io.StringIO()
        handler.setStream(stream)
        token = logging_setup.CORRELATION_ID.set("c0ffee00")
        try:
            logging.getLogger("services.example").warning("key %s refused", GOOGLE_KEY)
        finally:
            logging_setup.CORRELATION_ID.reset(token)
        [line] = stream.getvalue().splitlines()
        document = json.loads(line)
        assert document["correlation_id"] == "c0ffee00"
        assert document["message"] == "key *** refused"
        assert document["level"] == "WARNING" and document["logger"] == "services.example"
    finally:
        level, handlers, redactor = saved
        root.handlers = handlers
        root.setLevel(level)
        logging_setup._active_redactor = redactor
        for name, value in saved_levels.items():
            logging.getLogger(name).setLevel(value)
