"""Log redaction: configured secrets, bot-token URLs and bearer tokens never reach a log handler."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.core.dispatcher import ChatCore
from bot.logging_setup import TEXT_FORMAT, CorrelationFilter, RedactingFilter, configure_logging, log_to_file
from tests.bot.helpers import RecordingResponder, catalogue, invocation

SECRET = "sk-or-v1-abcdef0123456789"
GOOGLE_SECRET = "AIzaSyD-googleSecret_42"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger whose one handler redacts and writes to a StringIO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter([SECRET, GOOGLE_SECRET, "short", ""]))
    logger = logging.getLogger("tests.redaction")
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.handlers = []
    logger.propagate = True


def test_a_secret_in_the_message_arguments(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("calling %s with key %s (google %r)", "openrouter", SECRET, GOOGLE_SECRET)
    output = stream.getvalue()
    assert SECRET not in output and GOOGLE_SECRET not in output
    assert "calling openrouter with key *** (google '***')" in output


def test_a_secret_inside_a_longer_word_and_in_a_dict(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning("headers: %s", {"Authorization": f"Bearer{SECRET}", "x-goog-api-key": GOOGLE_SECRET})
    output = stream.getvalue()
    assert SECRET not in output and GOOGLE_SECRET not in output
    assert "***" in output


def test_a_secret_in_the_message_itself(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.error(f"key {SECRET} refused")
    assert stream.getvalue() == "ERROR key *** refused\n"


def test_a_secret_in_exception_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise PermissionError(f"401 for key {SECRET} at https://api.telegram.org/bot123456:ABC-def_ghi/getMe")
    except PermissionError:
        logger.exception("request failed")
    output = stream.getvalue()
    assert "Traceback" in output and "PermissionError" in output
    assert SECRET not in output
    assert "ABC-def_ghi" not in output
    assert "401 for key ***" in output


def test_the_same_record_through_two_handlers(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    second = io.StringIO()
    other = logging.StreamHandler(second)
    other.addFilter(RedactingFilter([SECRET]))
    logger.addHandler(other)
    try:
        raise ValueError(SECRET)
    except ValueError:
        logger.exception("oops %s", SECRET)
    for output in (stream.getvalue(), second.getvalue()):
        assert SECRET not in output
        assert "oops ***" in output


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.telegram.org/bot123456:ABC-def_ghi/getMe", "https://api.telegram.org/bot***/getMe"),
        (
            "https://api.telegram.org/file/bot123456:ABC-def_ghi/photos/file_1.jpg",
            "https://api.telegram.org/file/bot***/photos/file_1.jpg",
        ),
    ],
)
def test_telegram_token_urls_are_redacted(
    captured: tuple[logging.Logger, io.StringIO], url: str, expected: str
) -> None:
    logger, stream = captured
    logger.info('HTTP Request: POST %s "HTTP/1.1 200 OK"', url)
    output = stream.getvalue()
    assert "ABC-def_ghi" not in output and "123456:" not in output
    assert expected in output


def test_bearer_tokens_are_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.debug("headers: Authorization: Bearer sk-unknown-token_123.abc/def= and more")
    output = stream.getvalue()
    assert "sk-unknown-token_123" not in output
    assert "Authorization: Bearer *** and more" in output


def test_harmless_messages_are_untouched(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("story with %d segments for %s", 5, "console:local")
    assert stream.getvalue() == "INFO story with 5 segments for console:local\n"


def test_short_secrets_are_ignored() -> None:
    """A secret under six characters would redact ordinary words; it is not configured."""
    redactor = RedactingFilter(["short", "", SECRET])
    assert redactor.secrets == [SECRET]
    assert redactor.redact("a short note") == "a short note"


def test_longer_secrets_are_replaced_first() -> None:
    redactor = RedactingFilter(["abcdef", "abcdef-and-more"])
    assert redactor.redact("key abcdef-and-more") == "key ***"


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    noisy = ("httpx", "httpx2", "httpcore", "aiohttp.access", "urllib3", "google_genai")
    saved_levels = {name: logging.getLogger(name).level for name in noisy}
    saved_root = (root.level, list(root.handlers), {h: list(h.filters) for h in root.handlers})
    yield
    level, handlers, filters = saved_root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    for handler, kept in filters.items():
        handler.filters = kept
    root.setLevel(level)
    for name, saved in saved_levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("restore_root_logging")
def test_configure_logging_quiets_http_clients_and_redacts_every_handler() -> None:
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    logging.getLogger("httpx2").setLevel(logging.INFO)
    redactor = configure_logging("INFO", [SECRET])
    assert isinstance(redactor, RedactingFilter)
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("httpx2").level == logging.WARNING
    assert not logging.getLogger("httpx2").isEnabledFor(logging.INFO)
    root = logging.getLogger()
    assert root.level == logging.INFO
    assert root.handlers
    assert all(redactor in handler.filters for handler in root.handlers)

    stream = io.StringIO()
    late = logging.StreamHandler(stream)
    late.addFilter(redactor)
    logging.getLogger("tests.configured").addHandler(late)
    try:
        logging.getLogger("tests.configured").warning("key=%s", SECRET)
    finally:
        logging.getLogger("tests.configured").removeHandler(late)
    assert stream.getvalue() == "key=***\n"


async def test_a_command_log_line_shows_its_correlation_id_once() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(CorrelationFilter())
    logger = logging.getLogger("bot.core.dispatcher")
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await ChatCore(catalogue()).handle(invocation("help", "story"), RecordingResponder())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
    line = next(line for line in stream.getvalue().splitlines() if "/help from" in line)
    ids = re.findall(r"[0-9a-f]{8}", line.split(" bot.core.dispatcher ", 1)[1])
    assert len(ids) == 1, line
    assert line.endswith(f"[{ids[0]}]: /help from test:42")


@pytest.mark.usefixtures("restore_root_logging")
def test_log_to_file_takes_over_the_terminal_handler(tmp_path: Path) -> None:
    root = logging.getLogger()
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(terminal)
    configure_logging("INFO", [SECRET])
    path = log_to_file(tmp_path / "logs" / "bot.log")
    assert terminal not in root.handlers
    assert log_to_file(tmp_path / "logs" / "bot.log") == path  # a second call adds no second handler
    logging.getLogger("tests.file").warning("key=%s", SECRET)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" WARNING tests.file [-]: key=***")
