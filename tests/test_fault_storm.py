"""A fault storm: 1,000 commands against an upstream where every 5th request fails.

The failures cycle through 429 (with Retry-After), 500, a timeout and a connection reset, counted at
the fake, so the mix is fixed. The SDK retries once (its own retries, nothing of ours on top), the
circuit breaker and the bounded line are on. Every command must get exactly one final answer: a
result, or one of the error tree's clear messages; none may crash.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from itertools import cycle

import pytest

from bot.core.dispatcher import ChatCore
from bot.core.metrics import command_metrics, queue_position
from connectors import openai_connector, resilience
from connectors.errors import (
    InvalidResponse,
    RateLimited,
    UpstreamUnavailable,
)
from connectors.resilience import UpstreamGuardConfig, guard_for
from services.config import ServiceConfig, configure_services
from services.memory import UserMemory
from tests.bot.helpers import RecordingResponder, catalogue, invocation
from tests.conftest import TEST_SERVICE_CONFIG, openrouter_config
from tests.fakes import FakeOpenRouter, Fault

COMMANDS = 1_000
WORKERS = 50
FAULT_EVERY = 5
FAULTS = (Fault.status(429, retry_after=0.01), Fault.status(500), Fault.timeout(3.0), Fault.reset())
MIX = (
    ("story", "a dragon learns to fly segments=2"),
    ("write", "kind=caption a vegan ramen recipe"),
    ("trends", "indie game dev count=2"),
    ("meme", "mondays at a startup count=1"),
)


class StormyOpenRouter(FakeOpenRouter):
    """Every ``FAULT_EVERY``-th chat request gets the next fault of ``FAULTS``."""

    def __init__(self) -> None:
        super().__init__()
        self.chat_seen = 0
        self.faults_served: Counter[str] = Counter()
        self._next_fault = cycle(FAULTS)

    def take_fault(self, route: str | None) -> Fault | None:
        if route != "chat":
            return None
        self.chat_seen += 1
        if self.chat_seen % FAULT_EVERY:
            return None
        fault = next(self._next_fault)
        self.faults_served[f"{fault.kind}{fault.code or ''}"] += 1
        return fault


@pytest.fixture
async def stormy() -> AsyncIterator[StormyOpenRouter]:
    fake = StormyOpenRouter()
    await fake.start()
    openai_connector.configure_openai(
        openrouter_config(
            fake,
            timeout_seconds=1.0,
            max_retries=1,
            guard=UpstreamGuardConfig(
                failure_threshold=5, cooldown_seconds=0.05, max_concurrent=20, max_waiting=COMMANDS
            ),
        )
    )
    configure_services(TEST_SERVICE_CONFIG)
    yield fake
    await openai_connector.close_openai_client()
    configure_services(ServiceConfig())
    await fake.stop()


def clear_messages() -> set[str]:
    """Every message the storm may legitimately end a failed command with."""
    messages = {
        UpstreamUnavailable.user_message,
        InvalidResponse.user_message,
        RateLimited("x", retry_after=0.01).user_message,
        RateLimited("x").user_message,
    }
    return messages


async def test_every_command_gets_exactly_one_answer(stormy: StormyOpenRouter) -> None:
    core = ChatCore(catalogue(UserMemory()), middlewares=[command_metrics, queue_position], progress_interval=0)
    work = [MIX[i % len(MIX)] for i in range(COMMANDS)]
    results: list[tuple[str, RecordingResponder, object]] = []
    pending = list(reversed(work))

    async def worker() -> None:
        while pending:
            name, text = pending.pop()
            responder = RecordingResponder()
            reply = await core.handle(invocation(name, text), responder)
            results.append((name, responder, reply))

    await asyncio.gather(*(worker() for _ in range(WORKERS)))

    assert len(results) == COMMANDS
    allowed = clear_messages()
    outcomes: Counter[str] = Counter()
    for _name, responder, reply in results:
        assert responder.deliver_calls == 1 and responder.delivered == [reply]
        if not reply.is_error:  # type: ignore[attr-defined]
            outcomes["ok"] += 1
            continue
        [message] = reply.blocks  # type: ignore[attr-defined]
        circuit = "The text service is failing right now; please try again in about" in message
        assert circuit or any(message.endswith(clear) for clear in allowed), message
        assert "Something went wrong on my side" not in message
        outcomes["circuit" if circuit else "error"] += 1

    assert sum(stormy.faults_served.values()) >= stormy.chat_seen // FAULT_EVERY
    assert set(stormy.faults_served) == {"status429", "status500", "timeout", "reset"}
    assert outcomes["ok"] > COMMANDS // 2 and outcomes["error"] > 0
    line = guard_for("openrouter").line
    assert (line.in_flight, line.waiting) == (0, 0)
    in_line = [text for _, responder, _ in results for text in responder.progress if "in line" in text]
    assert in_line and in_line[0].startswith("⏳ The text service is busy: you are number ")
    assert resilience.guards()["openrouter"] is guard_for("openrouter")
