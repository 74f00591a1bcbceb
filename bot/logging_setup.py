"""Logging that never shows a secret: every handler redacts configured secrets and bot-token URLs,
and httpx (which logs Telegram URLs containing the token at INFO) is raised to WARNING."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_TOKEN_IN_URL = re.compile(r"(/bot|/file/bot)[0-9]+:[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")


class RedactingFilter(logging.Filter):
    """Replace secrets in the fully formatted message (args included) before any handler writes it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = _TOKEN_IN_URL.sub(r"\1***", text)
        return _BEARER.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


#: The id of the command being handled, set by the chat core; "-" outside any command.
CORRELATION_ID: contextvars.ContextVar[str] = contextvars.ContextVar("reelwright_correlation_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]: %(message)s"
NOISY_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "aiohttp.access",
    "aiohttp.client",
    "urllib3",
    "google_genai",
)


class CorrelationFilter(logging.Filter):
    """Give every record a ``correlation_id`` (records made without the record factory too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = CORRELATION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, correlation id, message, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "correlation_id": getattr(record, "correlation_id", CORRELATION_ID.get()),
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


_active_redactor: RedactingFilter | None = None
_factory_installed = False


def _install_record_factory() -> None:
    """Redact and tag every record where it is made, so handlers added later (by any library, on
    any logger) only ever see redacted text; the per-handler filter stays as a second line."""
    global _factory_installed
    if _factory_installed:
        return
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.correlation_id = CORRELATION_ID.get()
        redactor = _active_redactor
        if redactor is not None:
            # A bad format string is the handler's to report (handleError), not the caller's.
            with contextlib.suppress(Exception):
                redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def configure_logging(
    level: str = "INFO", secrets: Iterable[str] = (), log_format: str = "text", log_file: Path | None = None
) -> RedactingFilter:
    """Set up root logging once, with redaction on every handler (and on every record made).

    ``log_format="json"`` writes one JSON object per line; both formats carry the correlation id.
    Records go to stderr, or to ``log_file`` (appended) when one is given.
    """
    global _active_redactor
    redactor = RedactingFilter(secrets)
    _active_redactor = redactor
    _install_record_factory()
    root = logging.getLogger()
    if not root.handlers:
        handler: logging.Handler = logging.StreamHandler()
        root.addHandler(handler)
        handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.setLevel(level)
    for each in root.handlers:
        _add_filters(each, redactor)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_file is not None:
        log_to_file(log_file)
    return redactor


def _add_filters(handler: logging.Handler, redactor: RedactingFilter | None) -> None:
    if redactor is not None and redactor not in handler.filters:
        handler.addFilter(redactor)
    if not any(isinstance(f, CorrelationFilter) for f in handler.filters):
        handler.addFilter(CorrelationFilter())


def _writes_to_terminal(handler: logging.Handler) -> bool:
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    )


def log_to_file(path: Path) -> Path:
    """Send what the root logger writes to stderr/stdout to ``path`` instead, same format and filters.

    An interactive console calls this before its first prompt, so that a log line from a background
    job never lands in the middle of what the operator is typing. Returns the file's absolute path.
    """
    root = logging.getLogger()
    path = path.expanduser().absolute()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    terminal = [handler for handler in root.handlers if _writes_to_terminal(handler)]
    formatter = terminal[0].formatter if terminal else None
    file_handler.setFormatter(formatter or logging.Formatter(TEXT_FORMAT))
    _add_filters(file_handler, _active_redactor)
    for handler in terminal:
        root.removeHandler(handler)
    root.addHandler(file_handler)
    return path
