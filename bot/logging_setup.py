"""Logging that never shows a secret: every handler redacts configured secrets and bot-token URLs,
and httpx (which logs Telegram URLs containing the token at INFO) is raised to WARNING."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

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


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> RedactingFilter:
    """Set up root logging once, with redaction on every handler."""
    redactor = RedactingFilter(secrets)
    root = logging.getLogger()
    if not root.handlers:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for each in root.handlers:
        each.addFilter(redactor)
    for noisy in ("httpx", "httpx2", "httpcore", "aiohttp.access", "urllib3", "google_genai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
