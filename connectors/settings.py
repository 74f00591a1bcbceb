"""Reelwright's settings: every external endpoint, key and model is one environment variable.

Read once by the composition root (``bot.cli``) and handed down; nothing reads the environment
anywhere else. Secrets are ``SecretStr`` so that a repr, a log line or a traceback never shows them.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Literal

from limits import parse as parse_rate_limit
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OPENROUTER_DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
INSTANCE_ID_MAX_CHARS = 64  # the jobs table's lease_owner column
TELEGRAM_CLOUD_API_HOST = "api.telegram.org"
_TELEGRAM_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


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
    video_poll_max_seconds: float = Field(default=10.0, gt=0)
    # Past the deadline the user is told the video is late and will follow; it is polled on until
    # Veo answers, up to the hard deadline, after which the job fails with a clear message.
    video_deadline_seconds: float = Field(default=900.0, gt=0)
    video_hard_deadline_seconds: float = Field(default=6 * 3600.0, gt=0)

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
    # This process's name as the owner of job leases; a restarted process with the same id takes
    # its predecessor's jobs back at once. Default: host name and role (run, console, worker).
    # A second live process on this host with the same id runs as <id>#2 (a lock file in MEDIA_DIR).
    instance_id: str | None = Field(default=None, max_length=INSTANCE_ID_MAX_CHARS)

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
    # Where log lines go instead of stderr; an interactive console uses ./reelwright.log when unset.
    log_file: Path | None = None

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

    @field_validator("video_hard_deadline_seconds")
    @classmethod
    def _hard_deadline_after_deadline(cls, value: float, info: ValidationInfo) -> float:
        deadline = info.data.get("video_deadline_seconds")
        if deadline is not None and value < deadline:
            raise ValueError(f"must be at least VIDEO_DEADLINE_SECONDS ({deadline:g})")
        return value

    @field_validator("instance_id")
    @classmethod
    def _instance_id_printable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError("must be a non-empty printable name")
        return value

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
            parse_rate_limit(value)
        except ValueError:
            raise ValueError("must look like 20/minute or 100/hour") from None
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret_telegram_accepts(cls, value: SecretStr | None) -> SecretStr | None:
        """Telegram's setWebhook refuses any other secret_token, and only once the bot is starting."""
        if value is not None and not _TELEGRAM_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram refuses any other)")
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_url_is_https_for_telegrams_servers(
        cls, value: AnyHttpUrl | None, info: ValidationInfo
    ) -> AnyHttpUrl | None:
        """Telegram's cloud calls webhooks over HTTPS only; a self-hosted Bot API server may use HTTP."""
        api = info.data.get("telegram_api_base_url")
        cloud = api is not None and api.host == TELEGRAM_CLOUD_API_HOST
        if value is not None and value.scheme != "https" and cloud:
            raise ValueError("must be an https:// URL (Telegram only calls webhooks over HTTPS)")
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

    def instance_id_for(self, role: str) -> str:
        """The lease owner for a process of this role: INSTANCE_ID, else ``<host name>:<role>``."""
        if self.instance_id:
            return self.instance_id
        host = socket.gethostname() or "localhost"
        return f"{host[: INSTANCE_ID_MAX_CHARS - len(role) - 1]}:{role}"

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
        raise SettingsError(f"Invalid setting {name}: {first['msg']}") from None
