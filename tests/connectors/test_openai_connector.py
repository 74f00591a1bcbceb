"""The OpenRouter connector against the loopback fake, through the real openai SDK."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from connectors import openai_connector
from connectors.errors import (
    AuthenticationFailed,
    ContentBlocked,
    InvalidResponse,
    ModelNotFound,
    OutOfCredits,
    RateLimited,
    UpstreamUnavailable,
)
from connectors.openai_connector import complete, get_openai_client, strict_json_schema
from tests.conftest import openrouter_config
from tests.fakes import FakeOpenRouter, Fault

MESSAGES = [{"role": "user", "content": "Say hello"}]


class Titled(BaseModel):
    title: str
    items: list[str]


@pytest.fixture
async def connector(fake_openrouter: FakeOpenRouter):
    openai_connector.configure_openai(openrouter_config(fake_openrouter))
    yield fake_openrouter
    await openai_connector.close_openai_client()


def configure(fake: FakeOpenRouter, **overrides: object) -> None:
    openai_connector.configure_openai(openrouter_config(fake, **overrides))


async def test_complete_returns_text_usage_and_attribution_headers(connector: FakeOpenRouter) -> None:
    result = await complete(model="test/model", messages=MESSAGES)
    assert result.text.startswith("Sandbox reply")
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    [request] = connector.chat_requests
    assert request.headers["authorization"] == "Bearer test-openrouter-key"
    assert request.headers["x-title"] == "Reelwright tests"
    assert request.headers["http-referer"] == "https://reelwright.test"


async def test_structured_output_sends_strict_json_schema(connector: FakeOpenRouter) -> None:
    result = await complete(model="m", messages=MESSAGES, json_schema=Titled.model_json_schema(), schema_name="Titled")
    parsed = Titled.model_validate_json(result.text)
    assert parsed.title
    response_format = connector.chat_requests[0].json["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["additionalProperties"] is False


def test_strict_schema_keeps_a_property_called_title() -> None:
    """Stripping the ``title`` keyword keeps a property that happens to be named ``title``."""
    schema = strict_json_schema(Titled.model_json_schema())
    assert set(schema["properties"]) == {"title", "items"}
    assert schema["required"] == ["title", "items"]
    assert "title" not in schema["properties"]["title"]


async def test_one_client_for_a_thousand_concurrent_first_uses(connector: FakeOpenRouter) -> None:
    clients = await asyncio.gather(*(get_openai_client() for _ in range(1000)))
    assert len({id(client) for client in clients}) == 1


async def test_sequential_calls_reuse_one_connection(connector: FakeOpenRouter) -> None:
    for _ in range(20):
        await complete(model="m", messages=MESSAGES)
    assert connector.connections_accepted == 1


async def test_reset_and_close_build_a_new_client(connector: FakeOpenRouter) -> None:
    first = await get_openai_client()
    await openai_connector.close_openai_client()
    second = await get_openai_client()
    assert first is not second
    assert first.is_closed()


async def test_unconfigured_connector_says_so() -> None:
    openai_connector._config = None
    openai_connector.reset_openai_client()
    with pytest.raises(RuntimeError, match="configure_openai"):
        await get_openai_client()


async def test_429_with_retry_after_is_rate_limited(connector: FakeOpenRouter) -> None:
    connector.inject(Fault.status(429, retry_after=7))
    with pytest.raises(RateLimited) as caught:
        await complete(model="m", messages=MESSAGES)
    assert caught.value.retry_after == 7
    assert "7 s" in caught.value.user_message


async def test_sdk_retries_a_429_honouring_retry_after(fake_openrouter: FakeOpenRouter) -> None:
    configure(fake_openrouter, max_retries=2)
    fake_openrouter.inject(Fault.status(429, retry_after=0.01))
    result = await complete(model="m", messages=MESSAGES)
    assert result.text
    assert [r.headers["x-stainless-retry-count"] for r in fake_openrouter.chat_requests] == ["0", "1"]
    await openai_connector.close_openai_client()


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(402, message="Insufficient credits"),
        Fault.status(429, body={"error": {"code": "insufficient_quota", "message": "quota"}}),
    ],
    ids=["402", "429-insufficient_quota"],
)
async def test_out_of_credits_is_never_retried(fake_openrouter: FakeOpenRouter, fault: Fault) -> None:
    configure(fake_openrouter, max_retries=2)
    fake_openrouter.inject(fault, fault, fault)
    with pytest.raises(OutOfCredits):
        await complete(model="m", messages=MESSAGES)
    assert len(fake_openrouter.chat_requests) == 1
    await openai_connector.close_openai_client()


async def test_500_is_retried_by_the_sdk_then_unavailable(fake_openrouter: FakeOpenRouter) -> None:
    configure(fake_openrouter, max_retries=1)
    fake_openrouter.inject(Fault.status(500), Fault.status(500))
    with pytest.raises(UpstreamUnavailable):
        await complete(model="m", messages=MESSAGES)
    assert len(fake_openrouter.chat_requests) == 2
    await openai_connector.close_openai_client()


async def test_timeout_is_unavailable(fake_openrouter: FakeOpenRouter) -> None:
    configure(fake_openrouter, timeout_seconds=0.3)
    fake_openrouter.inject(Fault.timeout(2))
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        await complete(model="m", messages=MESSAGES)
    await openai_connector.close_openai_client()


async def test_connection_reset_is_unavailable(connector: FakeOpenRouter) -> None:
    connector.inject(Fault.reset())
    with pytest.raises(UpstreamUnavailable):
        await complete(model="m", messages=MESSAGES)


async def test_connection_refused_is_unavailable(fake_openrouter: FakeOpenRouter) -> None:
    """Reported as refused: the SDK's transport calls it a connect timeout, which misleads an operator."""
    base = fake_openrouter.base_url
    await fake_openrouter.stop()
    openai_connector.configure_openai(openrouter_config(fake_openrouter, base_url=base))
    with pytest.raises(UpstreamUnavailable, match=r"^unreachable: connection refused \(") as caught:
        await complete(model="m", messages=MESSAGES)
    assert "timed out" not in str(caught.value)
    await openai_connector.close_openai_client()


async def test_malformed_json_is_invalid_response(connector: FakeOpenRouter) -> None:
    connector.inject(Fault.malformed_json())
    with pytest.raises(InvalidResponse):
        await complete(model="m", messages=MESSAGES)


@pytest.mark.parametrize(
    ("code", "error"),
    [(502, UpstreamUnavailable), (402, OutOfCredits), (429, RateLimited), (400, InvalidResponse)],
)
async def test_http_200_with_error_body_is_not_a_success(
    connector: FakeOpenRouter, code: int, error: type[Exception]
) -> None:
    connector.inject(Fault.error_body_200(code=code, message="provider returned error"))
    with pytest.raises(error):
        await complete(model="m", messages=MESSAGES)


async def test_content_filter_and_refusal_are_content_blocked(connector: FakeOpenRouter) -> None:
    connector.inject(Fault.finish_reason("content_filter"), Fault.refusal("I can't help with that"))
    with pytest.raises(ContentBlocked):
        await complete(model="m", messages=MESSAGES)
    with pytest.raises(ContentBlocked):
        await complete(model="m", messages=MESSAGES)


async def test_bad_key_is_authentication_failed(connector: FakeOpenRouter) -> None:
    connector.inject(Fault.status(401, message="No auth credentials found"))
    with pytest.raises(AuthenticationFailed) as caught:
        await complete(model="m", messages=MESSAGES)
    assert "operator" in caught.value.user_message


async def test_unknown_model_is_model_not_found(connector: FakeOpenRouter) -> None:
    connector.known_models = {"known/model"}
    with pytest.raises(ModelNotFound):
        await complete(model="nope/unknown", messages=MESSAGES)


async def test_vision_content_parts_pass_through(connector: FakeOpenRouter) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    await complete(model="m", messages=[{"role": "user", "content": parts}])
    assert connector.chat_requests[0].json["messages"][0]["content"] == parts


async def test_the_api_key_is_not_in_error_messages(connector: FakeOpenRouter) -> None:
    connector.inject(Fault.status(500))
    with pytest.raises(UpstreamUnavailable) as caught:
        await complete(model="m", messages=MESSAGES)
    assert "test-openrouter-key" not in str(caught.value)
    assert "test-openrouter-key" not in json.dumps(caught.value.user_message)
