"""Reelwright's settings: every external endpoint, key and model is one environment variable.

Read once by the composition root (``bot.cli``) and handed down; nothing reads the environment
anywhere else. Secrets are ``SecretStr`` so that a repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse as parse_rate_limit
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OPENROUTER_DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
REDIS_SCHEMES = ("redis", "rediss", "unix")


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line that names it."""


class Settings(BaseSettings):
    """All settings, from the environment and an optional ``.env`` file."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    # Text models, through OpenRouter or any OpenAI-compatible server.
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: AnyHttpUrl = AnyHttpUrl(OPENROUTER_DEFAULT_BASE_URL)
    openrouter_site_url: str = "https://github.com/reelwright/reelwright"
    openrouter_app_name: str = "Reelwright"
    story_model: str = "google/gemini-2.5-flash"
    meme_model: str = "google/gemini-2.5-flash"
    content_model: str = "google/gemini-2.5-flash"
    trends_model: str = "google/gemini-2.5-flash"
    vision_model: str = "google/gemini-2.5-flash"
    text_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    text_max_retries: int = Field(default=2, ge=0, le=5)

    # Media models, through Google GenAI.
    google_api_key: SecretStr | None = None
    genai_base_url: AnyHttpUrl | None = None
    genai_enterprise: bool = False
    google_cloud_project: str | None = None
    google_cloud_location: str = "us-central1"
    video_model: str = "veo-3.0-fast-generate-001"
    image_model: str = "imagen-4.0-generate-001"
    gemini_image_model: str = "gemini-2.5-flash-image"
    media_timeout_seconds: float = Field(default=120.0, gt=0, le=600)
    media_max_retries: int = Field(default=3, ge=1, le=8)
    video_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    video_poll_initial_seconds: float = Field(default=5.0, gt=0)
    video_poll_max_seconds: float = Field(default=20.0, gt=0)
    video_deadline_seconds: float = Field(default=900.0, gt=0)

    # Chat platforms.
    telegram_bot_token: SecretStr | None = None
    telegram_api_base_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org/bot")
    telegram_file_base_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org/file/bot")
    telegram_webhook_url: AnyHttpUrl | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = Field(default=8443, gt=0, lt=65536)
    telegram_concurrent_updates: int = Field(default=1024, gt=0)
    telegram_rate_limit_per_second: float = Field(default=30.0, gt=0)
    # A self-hosted Bot API server (2,000 MB files); None: any host but api.telegram.org is one.
    telegram_local_api: bool | None = None
    discord_bot_token: SecretStr | None = None
    discord_guild_ids: str = ""
    discord_api_base_url: AnyHttpUrl = AnyHttpUrl("https://discord.com/api/v10")
    discord_gateway_url: str | None = None

    # State.
    database_url: str = "sqlite+aiosqlite:///reelwright.sqlite3"
    redis_url: str | None = None
    job_queue_name: str = "reelwright:jobs"
    # Budget counters and rate-limit windows in Redis are named under this prefix.
    redis_key_prefix: str = "reelwright"
    media_dir: Path = Path("media")
    media_retention_days: float = Field(default=7.0, gt=0)
    job_lease_seconds: float = Field(default=90.0, ge=2)
    job_sweep_seconds: float = Field(default=20.0, gt=0)
    schedule_grace_minutes: float = Field(default=60.0, ge=0)
    schedule_reconcile_seconds: float = Field(default=60.0, gt=0)

    # Money and access: budgets in US dollars (0 = no limit), a confirmation above a cost.
    price_table: str = ""
    budget_user_daily_usd: float = Field(default=5.0, ge=0)
    budget_user_monthly_usd: float = Field(default=50.0, ge=0)
    budget_chat_daily_usd: float = Field(default=20.0, ge=0)
    budget_chat_monthly_usd: float = Field(default=200.0, ge=0)
    confirm_above_usd: float = Field(default=1.0, ge=0)
    rate_limit: str = "20/minute"
    allowed_users: str = ""
    allowed_chats: str = ""
    allowed_guilds: str = ""
    allowed_roles: str = ""
    admin_users: str = ""

    # Limits on user input, enforced before any paid call.
    max_prompt_chars: int = Field(default=2000, gt=0)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)

    # Made-up replies from the in-process sandbox upstreams when an AI key is missing: always in the
    # console and with no platform token; with a platform token only when asked for.
    reelwright_sandbox: bool = False

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Resilience (connectors/resilience.py): per-call-type timeouts, circuit breakers, bounded lines.
    vision_timeout_seconds: float = Field(default=90.0, gt=0, le=600)
    video_start_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    video_poll_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    image_timeout_seconds: float = Field(default=120.0, gt=0, le=600)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_cooldown_seconds: float = Field(default=30.0, gt=0)
    text_max_concurrent: int = Field(default=1000, ge=1)
    text_max_waiting: int = Field(default=1000, ge=0)
    media_max_concurrent: int = Field(default=32, ge=1)
    media_max_waiting: int = Field(default=200, ge=0)
    trends_cache_seconds: float = Field(default=600.0, ge=0)

    # Operations: /healthz, /readyz and /metrics (bot/health.py); unset or 0 = no server.
    health_port: int | None = Field(default=None, ge=0, lt=65536)
    health_host: str = "127.0.0.1"

    @field_validator(
        "video_model",
        "image_model",
        "gemini_image_model",
        "story_model",
        "meme_model",
        "content_model",
        "trends_model",
        "vision_model",
    )
    @classmethod
    def _model_name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("price_table")
    @classmethod
    def _price_table_is_json_object(cls, value: str) -> str:
        if value.strip():
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"must be JSON ({exc})") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object of model name -> prices")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        try:
            limit = parse_rate_limit(value)
        except ValueError:
            raise ValueError("must look like 20/minute or 100/hour") from None
        if limit.amount < 1:
            raise ValueError("must allow at least 1 command (0 would refuse every paid command)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        from connectors.database import check_database_url

        check_database_url(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_has_a_redis_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in REDIS_SCHEMES:
            shown = f"{parts.scheme}:// is not a Redis scheme" if parts.scheme else "not a URL"
            raise ValueError(f"{shown}; use redis://host:6379/0 (or rediss://, unix://)")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port must be a number, as in redis://host:6379/0") from None
        return value

    @property
    def text_sandbox(self) -> bool:
        """No key and no server of the operator's own: text commands use the sandbox upstream.

        An OPENROUTER_BASE_URL other than OpenRouter's (a local OpenAI-compatible server) is used
        even without a key, since such servers often need none.
        """
        return self.openrouter_api_key is None and self.openrouter_base_url_is_default

    @property
    def openrouter_base_url_is_default(self) -> bool:
        return str(self.openrouter_base_url).rstrip("/") == OPENROUTER_DEFAULT_BASE_URL

    @property
    def media_sandbox(self) -> bool:
        """No Google key and no project: media commands need the sandbox upstream (or are not set up)."""
        return self.google_api_key is None and self.google_cloud_project is None

    @property
    def serves_platforms(self) -> bool:
        """A Telegram or Discord token is set: this bot answers real people."""
        return self.telegram_bot_token is not None or self.discord_bot_token is not None

    @property
    def sandbox_allowed(self) -> bool:
        """Made-up sandbox replies reach real people only when the operator asked for them."""
        return self.reelwright_sandbox or not self.serves_platforms


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a validation error into one line that names the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise SettingsError(f"Invalid setting {name}: {message}") from None
