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
from urllib.parse import urlsplit

from limits import parse as parse_rate_limit
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OPENROUTER_DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
INSTANCE_ID_MAX_CHARS = 64  # the jobs table's lease_owner column
TELEGRAM_CLOUD_API_HOST = "api.telegram.org"
_TELEGRAM_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line that names it."""


class Settings(BaseSettings):
    """All settings, from the environment and an optional ``.env`` file.

    The docstring under each setting is its description: ``.env.example``, ``docs/settings.md`` and
    the README's table are generated from them (``python -m bot.settings_docs``).
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        use_attribute_docstrings=True,
    )

    # Text models, through OpenRouter or any OpenAI-compatible server.
    openrouter_api_key: SecretStr | None = None
    """OpenRouter key. With a Telegram or Discord token the bot does not start without it (or an OPENROUTER_BASE_URL of
    your own) unless REELWRIGHT_SANDBOX is set; with no key at all the console uses the sandbox."""
    openrouter_base_url: AnyHttpUrl = AnyHttpUrl(OPENROUTER_DEFAULT_BASE_URL)
    """Where text calls go: OpenRouter, or any OpenAI-compatible server (a local one needs no key)."""
    openrouter_site_url: str = "https://github.com/reelwright/reelwright"
    """Sent to OpenRouter as HTTP-Referer, which attributes the calls to this app."""
    openrouter_app_name: str = "Reelwright"
    """Sent to OpenRouter as X-Title."""
    story_model: str = "google/gemini-2.5-flash"
    """Model for the story commands (/story, /longstory, /storysets)."""
    meme_model: str = "google/gemini-2.5-flash"
    """Model for /meme."""
    content_model: str = "google/gemini-2.5-flash"
    """Model for /write."""
    trends_model: str = "google/gemini-2.5-flash"
    """Model for /trends and scheduled trend posts."""
    vision_model: str = "google/gemini-2.5-flash"
    """Model that analyses /character images."""
    text_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    """Timeout per text request attempt."""
    text_max_retries: int = Field(default=2, ge=0, le=5)
    """Retries by the openai SDK (it honours Retry-After; out-of-credit answers are never retried)."""

    # Media models, through Google GenAI.
    google_api_key: SecretStr | None = None
    """Gemini Developer API key, or an enterprise express-mode key with GENAI_ENTERPRISE. With a platform token and
    neither it nor GOOGLE_CLOUD_PROJECT, /video and /thumbnail say they are not set up."""
    genai_base_url: AnyHttpUrl | None = None
    """Redirect the Google GenAI API (proxies, gateways, tests); Developer-API videos are downloaded from it too."""
    genai_enterprise: bool = False
    """Enterprise / Vertex mode: Veo and Imagen through the SDK."""
    google_cloud_project: str | None = None
    """Enterprise with project credentials (application default credentials)."""
    google_cloud_location: str = "us-central1"
    """Region for GOOGLE_CLOUD_PROJECT."""
    video_model: str = "veo-3.0-fast-generate-001"
    """Veo model for /video."""
    image_model: str = "imagen-4.0-generate-001"
    """Thumbnail model in enterprise mode (Imagen)."""
    gemini_image_model: str = "gemini-2.5-flash-image"
    """Thumbnail model with a plain Gemini API key."""
    tts_model: str = "gemini-2.5-flash-preview-tts"
    """Gemini text-to-speech model for narration (any kind of Google key)."""
    tts_voice: str = "Kore"
    """Default prebuilt Gemini voice for narration (Kore, Puck, Charon, ...)."""
    media_timeout_seconds: float = Field(default=120.0, gt=0, le=600)
    """Timeout per media request attempt."""
    media_max_retries: int = Field(default=3, ge=1, le=8)
    """Retry attempts by the google-genai SDK (the paid Veo start call in Developer mode is never retried)."""
    video_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    """Cap on a downloaded video, in bytes."""
    video_poll_initial_seconds: float = Field(default=5.0, gt=0)
    """First wait between polls of a running Veo operation; grows 1.5x per poll."""
    video_poll_max_seconds: float = Field(default=10.0, gt=0)
    """Longest wait between polls of a running Veo operation (a finished video is seen within it)."""
    video_deadline_seconds: float = Field(default=900.0, gt=0)
    """Past this the user is told the video is late and will follow; it is still polled until Veo answers."""
    video_hard_deadline_seconds: float = Field(default=6 * 3600.0, gt=0)
    """A video Veo has not finished this long after its submission fails with a clear message (never below
    VIDEO_DEADLINE_SECONDS)."""

    # Chat platforms.
    telegram_bot_token: SecretStr | None = None
    """Telegram bot token: `reelwright run` serves Telegram when it is set."""
    telegram_api_base_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org/bot")
    """Bot API endpoint; a self-hosted Bot API server lifts the upload limits."""
    telegram_file_base_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org/file/bot")
    """Bot API file download endpoint."""
    telegram_webhook_url: AnyHttpUrl | None = None
    """Public HTTPS URL Telegram posts updates to (webhook mode); unset: long polling. Its path is the path served."""
    telegram_webhook_secret: SecretStr | None = None
    """Required with a webhook: a request without this X-Telegram-Bot-Api-Secret-Token gets 403."""
    telegram_webhook_listen: str = "0.0.0.0"
    """Address the webhook server listens on."""
    telegram_webhook_port: int = Field(default=8443, gt=0, lt=65536)
    """Port the webhook server listens on (on a platform that routes one port, its $PORT)."""
    telegram_concurrent_updates: int = Field(default=1024, gt=0)
    """Updates handled at once."""
    telegram_rate_limit_per_second: float = Field(default=30.0, gt=0)
    """Messages sent per second at most (chat actions exempt); 429s are retried after retry_after."""
    telegram_local_api: bool | None = None
    """The Bot API server is self-hosted (2,000 MB files); unset: any host but api.telegram.org is taken as one."""
    discord_bot_token: SecretStr | None = None
    """Discord bot token: `reelwright run` serves Discord slash commands when it is set."""
    discord_guild_ids: str = ""
    """Sync slash commands to these guilds (comma-separated ids, instant) instead of globally."""
    discord_api_base_url: AnyHttpUrl = AnyHttpUrl("https://discord.com/api/v10")
    """Discord REST endpoint (a REST proxy, tests)."""
    discord_gateway_url: str | None = None
    """Discord gateway websocket URL; unset: Discord's."""

    # State.
    database_url: str = "sqlite+aiosqlite:///reelwright.sqlite3"
    """The store (jobs, schedules, characters, usage): sqlite:///file or postgresql://user:password@host/db. Reached
    and migrated at start."""
    redis_url: str | None = None
    """Jobs on a Redis queue, run by `reelwright worker` processes; budgets and rate limits are shared there. Unset:
    jobs run inside `reelwright run`, budgets in its memory."""
    job_queue_name: str = "reelwright:jobs"
    """Name of the Redis stream that carries job ids."""
    redis_key_prefix: str = "reelwright"
    """Budget counters and rate-limit windows in Redis are named under this prefix."""
    media_dir: Path = Path("media")
    """Where images and videos are written; created and probed with a file at start. Keep it on persistent storage."""
    media_retention_days: float = Field(default=7.0, gt=0)
    """Result files are deleted after this many days."""
    job_lease_seconds: float = Field(default=90.0, ge=2)
    """A job held by a process that stopped renewing its lease for this long is taken over."""
    job_sweep_seconds: float = Field(default=20.0, gt=0)
    """How often unfinished jobs nobody holds are looked for and resumed."""
    schedule_grace_minutes: float = Field(default=60.0, ge=0)
    """A scheduled post missed while the bot was down is still posted at start within this window; older ones are
    skipped."""
    schedule_reconcile_seconds: float = Field(default=60.0, gt=0)
    """How often each process syncs its trend-post timers with the schedules in the database."""
    instance_id: str | None = Field(default=None, max_length=INSTANCE_ID_MAX_CHARS)
    """This process's name as the owner of job leases (default: host name and role, e.g. myhost:worker); a
    restarted process with the same id takes its predecessor's jobs back at once. A second live process on
    this host with the same id runs as <id>#2 (a lock file under MEDIA_DIR/.instances)."""

    # Money and access: budgets in US dollars (0 = no limit), a confirmation above a cost.
    price_table: str = ""
    """JSON overrides of the built-in list prices per model, e.g. {"google/gemini-2.5-flash": {"input_per_million":
    0.3, "output_per_million": 2.5}}; also per_second (video), per_image. Unknown names and negative prices are
    refused."""
    budget_user_daily_usd: float = Field(default=5.0, ge=0)
    """Spend per user per UTC day, in US dollars; 0 = no limit."""
    budget_user_monthly_usd: float = Field(default=50.0, ge=0)
    """Spend per user per UTC month; 0 = no limit."""
    budget_chat_daily_usd: float = Field(default=20.0, ge=0)
    """Spend per chat (a Discord server counts as one) per UTC day; 0 = no limit."""
    budget_chat_monthly_usd: float = Field(default=200.0, ge=0)
    """Spend per chat per UTC month; 0 = no limit."""
    confirm_above_usd: float = Field(default=1.0, ge=0)
    """Commands estimated at this or more first ask for /confirm (not in the console)."""
    rate_limit: str = "20/minute"
    """Paid commands per user, as 20/minute or 100/hour (a moving window)."""
    allowed_users: str = ""
    """Only these users may use the bot (comma-separated ids, `123` or `telegram:123`); empty: everyone."""
    allowed_chats: str = ""
    """Only in these chats; empty: every chat."""
    allowed_guilds: str = ""
    """Only in these Discord servers; empty: every server."""
    allowed_roles: str = ""
    """Only members with one of these Discord roles; empty: any role."""
    admin_users: str = ""
    """Bot admins everywhere: /schedule and the chat totals in /usage, like a chat admin."""

    # Limits on user input, enforced before any paid call.
    max_prompt_chars: int = Field(default=2000, gt=0)
    """Longest prompt accepted, checked before any paid call."""
    max_image_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    """Largest image accepted, checked before it is downloaded."""
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    """Most pixels in an accepted image (decompression bombs are refused)."""

    # Made-up replies from the in-process sandbox upstreams when an AI key is missing: always in the
    # console and with no platform token; with a platform token only when asked for.
    reelwright_sandbox: bool = False
    """Serve the labelled sandbox for missing AI keys even with a platform token (the console always does)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    log_format: Literal["text", "json"] = "text"
    """`json` writes one JSON object per line."""
    log_file: Path | None = None
    """Where log lines go instead of stderr; an interactive console uses ./reelwright.log when unset."""

    # Resilience (connectors/resilience.py): per-call-type timeouts, circuit breakers, bounded lines.
    vision_timeout_seconds: float = Field(default=90.0, gt=0, le=600)
    """Timeout per attempt for calls with an image."""
    video_start_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    """Timeout per attempt of the call that starts a Veo video."""
    video_poll_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """Timeout per attempt of a Veo poll."""
    image_timeout_seconds: float = Field(default=120.0, gt=0, le=600)
    """Timeout per attempt of a thumbnail call."""
    circuit_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failures that waiting can fix (timeouts, resets, 5xx, 429) that open an upstream's circuit."""
    circuit_cooldown_seconds: float = Field(default=30.0, gt=0)
    """Seconds an open circuit refuses calls before one probe goes through."""
    text_max_concurrent: int = Field(default=1000, ge=1)
    """OpenRouter calls in flight at most."""
    text_max_waiting: int = Field(default=1000, ge=0)
    """OpenRouter calls waiting in line at most; past it users are told the service is busy."""
    media_max_concurrent: int = Field(default=32, ge=1)
    """Veo start and image calls in flight at most."""
    media_max_waiting: int = Field(default=200, ge=0)
    """Veo start and image calls waiting in line at most."""
    short_long_side: int = Field(default=1280, ge=128, le=1920)
    """Pixels along the long side of a finished /short (1280: 720x1280 vertical)."""
    short_max_mb: int = Field(default=50, ge=1, le=2000)
    """Largest finished /short in MB where the platform sets no lower limit (the console)."""
    stitch_max_concurrent: int = Field(default=2, ge=1, le=64)
    """Stitching processes (FFmpeg encodes for /short) running at once; one per core is plenty."""
    trends_cache_seconds: float = Field(default=600.0, ge=0)
    """Identical /trends requests are answered from a cache this long; 0 turns it off."""

    # Operations: /healthz, /readyz and /metrics (bot/health.py); unset or 0 = no server.
    health_port: int | None = Field(default=None, ge=0, lt=65536)
    """Serve /healthz, /readyz and /metrics on this port; unset or 0: no server."""
    health_host: str = "127.0.0.1"
    """Address of the health server; 0.0.0.0 in a container."""

    @field_validator(
        "video_model",
        "image_model",
        "gemini_image_model",
        "tts_model",
        "tts_voice",
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
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise SettingsError(f"Invalid setting {name}: {message}") from None
