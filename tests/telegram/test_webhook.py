"""Webhook mode: PTB's webhook server behind TELEGRAM_WEBHOOK_URL, the secret header checked."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest

from bot.runtime import PlatformStartError
from bot.telegram.app import TelegramService
from connectors.settings import SettingsError, load_settings
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.telegram.conftest import RuntimeFactory, TelegramBot

SECRET = "webhook-secret-0123456789"
CHAT = 900


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def webhook_bot(start_bot: Any) -> tuple[TelegramBot, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-hook"
    tg: TelegramBot = await start_bot(
        telegram_webhook_url=url,
        telegram_webhook_secret=SECRET,
        telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port,
    )
    return tg, url


async def post_update(url: str, update: dict[str, Any], secret: str | None) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    async with aiohttp.ClientSession() as session, session.post(url, json=update, headers=headers) as response:
        return response.status


async def test_the_webhook_is_registered_with_its_secret(webhook_bot: tuple[TelegramBot, str]) -> None:
    tg, url = webhook_bot
    assert tg.api.webhook_url == url and tg.api.webhook_secret == SECRET
    assert tg.api.calls_of("getUpdates") == []
    assert tg.api.calls_of("setWebhook")[0].json_param("allowed_updates") == ["message", "callback_query"]


async def test_an_update_with_the_secret_is_answered(webhook_bot: tuple[TelegramBot, str]) -> None:
    tg, url = webhook_bot
    update = tg.api.update_for(tg.api.message(CHAT, "/help story"))
    assert await post_update(url, update, SECRET) == 200
    await tg.settle()
    replies = tg.api.calls_of("sendMessage", CHAT)
    assert len(replies) == 1 and replies[0].params["text"].startswith("/story:")


@pytest.mark.parametrize("secret", [None, "wrong-secret"])
async def test_a_missing_or_wrong_secret_is_refused(webhook_bot: tuple[TelegramBot, str], secret: str | None) -> None:
    tg, url = webhook_bot
    update = tg.api.update_for(tg.api.message(CHAT, "/story a dragon"))
    assert await post_update(url, update, secret) == 403
    await tg.settle()
    assert tg.api.sent_to(CHAT) == [] and not tg.text.chat_requests


async def test_a_webhook_without_a_secret_does_not_start(
    telegram_api: FakeTelegramAPI, make_runtime: RuntimeFactory
) -> None:
    runtime = await make_runtime(telegram_webhook_url="https://bot.example.com/hook")
    with pytest.raises(PlatformStartError, match="TELEGRAM_WEBHOOK_SECRET"):
        await TelegramService(runtime).start()
    assert telegram_api.calls == []


@pytest.mark.parametrize(
    "secret",
    ["has space", "slash/no", "dots.no", "ünïcode", "x" * 257],
    ids=["space", "slash", "dot", "unicode", "long"],
)
def test_a_webhook_secret_telegram_refuses_is_refused_at_start(secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, telegram_webhook_secret=secret)
    assert str(caught.value) == (
        "Invalid setting TELEGRAM_WEBHOOK_SECRET: "
        "must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram refuses any other)"
    )
    assert secret not in str(caught.value)


@pytest.mark.parametrize("secret", ["a", "webhook-secret_0123456789", "x" * 256])
def test_a_webhook_secret_telegram_accepts(secret: str) -> None:
    settings = load_settings(_env_file=None, telegram_webhook_secret=secret)
    assert settings.telegram_webhook_secret is not None
    assert settings.telegram_webhook_secret.get_secret_value() == secret


def test_a_plain_http_webhook_url_for_telegrams_servers_is_refused_at_start() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, telegram_webhook_url="http://bot.example.com/hook")
    assert str(caught.value) == (
        "Invalid setting TELEGRAM_WEBHOOK_URL: must be an https:// URL (Telegram only calls webhooks over HTTPS)"
    )


def test_a_plain_http_webhook_url_is_fine_for_a_self_hosted_bot_api_server() -> None:
    settings = load_settings(
        _env_file=None,
        telegram_api_base_url="http://127.0.0.1:8081/bot",
        telegram_webhook_url="http://127.0.0.1:8443/hook",
    )
    assert str(settings.telegram_webhook_url) == "http://127.0.0.1:8443/hook"
