"""Settings from the environment: defaults, overrides, secrets that never print, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.settings import OPENROUTER_DEFAULT_BASE_URL, Settings, SettingsError, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"

SECRETS = {
    "OPENROUTER_API_KEY": "sk-or-v1-0123456789abcdef",
    "GOOGLE_API_KEY": "AIzaSyTESTTESTTESTTEST0123",
    "TELEGRAM_BOT_TOKEN": "123456789:AAHtelegramSecretToken_xyz",
    "DISCORD_BOT_TOKEN": "MTIzNDU2Nzg5.discord-secret.token",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the developer's shell or a ``.env`` in the working directory leaks in."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url.startswith("sqlite")
    assert (
        str(settings.openrouter_base_url).rstrip("/") == OPENROUTER_DEFAULT_BASE_URL == "https://openrouter.ai/api/v1"
    )
    assert settings.openrouter_base_url_is_default
    assert settings.openrouter_api_key is None and settings.google_api_key is None
    assert settings.telegram_bot_token is None and settings.discord_bot_token is None
    assert settings.text_timeout_seconds == 60.0
    assert settings.max_prompt_chars == 2000
    assert settings.media_dir == Path("media")
    assert settings.log_level == "INFO"


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXT_TIMEOUT_SECONDS", "12.5")
    monkeypatch.setenv("VIDEO_MODEL", "  veo-3.1-generate-preview  ")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://db/reelwright")
    monkeypatch.setenv("OPENROUTER_BASE_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("media_dir", "/srv/media")  # names are case-insensitive
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert settings.text_timeout_seconds == 12.5
    assert settings.video_model == "veo-3.1-generate-preview"
    assert settings.database_url == "postgresql+asyncpg://db/reelwright"
    assert str(settings.openrouter_base_url).rstrip("/") == "http://127.0.0.1:8080/v1"
    assert not settings.openrouter_base_url_is_default
    assert settings.media_dir == Path("/srv/media")
    assert settings.log_level == "DEBUG"


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXT_TIMEOUT_SECONDS", "12")
    monkeypatch.setenv("STORY_MODEL", "env/model")
    settings = load_settings(text_timeout_seconds=30, media_dir=Path("/tmp/x"))
    assert settings.text_timeout_seconds == 30
    assert settings.story_model == "env/model"
    assert settings.media_dir == Path("/tmp/x")


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MEME_MODEL=dotenv/meme\nTEXT_MAX_RETRIES=4\n", encoding="utf-8")
    monkeypatch.setenv("TEXT_MAX_RETRIES", "1")  # the environment wins over the file
    settings = load_settings()
    assert settings.meme_model == "dotenv/meme"
    assert settings.text_max_retries == 1


def test_secrets_are_secret_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    shown = [repr(settings), str(settings), f"{settings}", settings.model_dump_json()]
    for name, value in SECRETS.items():
        secret = getattr(settings, name.lower())
        assert isinstance(secret, SecretStr)
        assert secret.get_secret_value() == value
        for text in shown:
            assert value not in text, f"{name} leaked"
            assert value[:12] not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENROUTER_BASE_URL", "not-a-url"),
        ("GENAI_BASE_URL", "ftp//nowhere"),
        ("TEXT_TIMEOUT_SECONDS", "-1"),
        ("TEXT_TIMEOUT_SECONDS", "abc"),
        ("TEXT_TIMEOUT_SECONDS", "0"),
        ("MEDIA_TIMEOUT_SECONDS", "9999"),
        ("TEXT_MAX_RETRIES", "6"),
        ("MEDIA_MAX_RETRIES", "0"),
        ("VIDEO_MODEL", "  "),
        ("MAX_PROMPT_CHARS", "0"),
        ("GENAI_ENTERPRISE", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("DATABASE_URL", "garbage"),
        ("DATABASE_URL", "mysql://reelwright@127.0.0.1/reelwright"),
        ("DATABASE_URL", "postgresql+psycopg3://127.0.0.1/reelwright"),
        ("REDIS_URL", "garbage"),
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
        ("REDIS_URL", "redis://127.0.0.1:port/0"),
        ("RATE_LIMIT", "0/minute"),
        ("RATE_LIMIT", "often"),
        ("PRICE_TABLE", "[1, 2]"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert name in message
    assert message.startswith(f"Invalid setting {name}")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "sqlite:///reelwright.sqlite3"),
        ("DATABASE_URL", "postgresql://user:pass@db:5432/reelwright"),
        ("DATABASE_URL", "postgres://db/reelwright"),
        ("DATABASE_URL", "postgresql+asyncpg://db/reelwright"),
        ("REDIS_URL", "rediss://:pass@cache:6380/1"),
        ("REDIS_URL", "unix:///run/redis.sock"),
        ("RATE_LIMIT", "1/second"),
    ],
)
def test_good_urls_and_limits_are_accepted_as_written(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), name.lower()) == value


def test_a_refused_database_url_does_not_repeat_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://reelwright:hunter2@127.0.0.1/reelwright")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("Invalid setting DATABASE_URL: mysql is not supported; use sqlite:///")
    assert "hunter2" not in str(caught.value)


def test_a_bad_override_names_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"^Invalid setting VIDEO_MAX_BYTES"):
        load_settings(video_max_bytes=0)


def test_a_bad_secret_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-goodkey123456")
    monkeypatch.setenv("TEXT_TIMEOUT_SECONDS", "sk-or-v1-pasted-in-the-wrong-place")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "sk-or-v1-goodkey123456" not in str(caught.value)


def test_sandbox_without_any_key() -> None:
    settings = load_settings()
    assert settings.text_sandbox
    assert settings.media_sandbox


def test_keys_turn_the_sandbox_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", SECRETS["OPENROUTER_API_KEY"])
    settings = load_settings()
    assert not settings.text_sandbox
    assert settings.media_sandbox
    monkeypatch.setenv("GOOGLE_API_KEY", SECRETS["GOOGLE_API_KEY"])
    assert not load_settings().media_sandbox


def test_a_google_cloud_project_turns_the_media_sandbox_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    settings = load_settings()
    assert not settings.media_sandbox
    assert settings.text_sandbox


def test_an_own_text_server_needs_no_key_and_is_not_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_BASE_URL", "http://127.0.0.1:11434/v1")
    settings = load_settings()
    assert settings.openrouter_api_key is None
    assert not settings.text_sandbox


def test_the_copied_env_example_means_no_keys(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings()
    assert settings.openrouter_api_key is None
    assert settings.telegram_bot_token is None and settings.discord_bot_token is None
    assert settings.text_sandbox
    assert settings.media_sandbox


def test_an_empty_key_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "")
    assert load_settings().media_sandbox


def test_an_empty_value_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`.env.example` ships `NAME=` lines: an empty value is "not set", never an empty model or key."""
    monkeypatch.setenv("STORY_MODEL", "")
    assert load_settings(_env_file=None).story_model == "google/gemini-2.5-flash"


def test_the_sandbox_reaches_real_chats_only_on_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).sandbox_allowed  # the console: no platform token
    with_token = load_settings(_env_file=None, telegram_bot_token="123:abc")
    assert with_token.serves_platforms and not with_token.sandbox_allowed
    monkeypatch.setenv("REELWRIGHT_SANDBOX", "1")
    assert load_settings(_env_file=None, discord_bot_token="a.b.c").sandbox_allowed


def test_the_instance_id_defaults_to_host_and_role_and_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    settings = load_settings()
    host = socket.gethostname()
    assert settings.instance_id_for("run") == f"{host}:run"
    assert settings.instance_id_for("worker") == f"{host}:worker" != settings.instance_id_for("run")
    monkeypatch.setenv("INSTANCE_ID", " bot-a ")
    assert load_settings().instance_id_for("worker") == "bot-a"
    monkeypatch.setenv("INSTANCE_ID", "x" * 65)
    with pytest.raises(SettingsError, match="INSTANCE_ID"):
        load_settings()


def test_the_hard_video_deadline_cannot_come_before_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().video_hard_deadline_seconds == 6 * 3600
    monkeypatch.setenv("VIDEO_DEADLINE_SECONDS", "900")
    monkeypatch.setenv("VIDEO_HARD_DEADLINE_SECONDS", "600")
    with pytest.raises(SettingsError, match="VIDEO_HARD_DEADLINE_SECONDS"):
        load_settings()
