"""Circuit breakers, the bounded line and per-call-type timeouts, through the real SDKs against the fakes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors import genai_connector, openai_connector
from connectors.errors import ContentBlocked, RateLimited, UpstreamUnavailable
from connectors.resilience import (
    CallLine,
    CallRecord,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    UpstreamBusy,
    UpstreamGuardConfig,
    add_call_observer,
    configure_guard,
    guard_for,
    queue_listener,
    remove_call_observer,
)
from tests.conftest import genai_config, openrouter_config
from tests.fakes import FakeGenAI, FakeOpenRouter, Fault

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
VIDEO = {"model": "veo-3.0-fast-generate-001", "prompt": "a cat", "duration_seconds": 8, "aspect_ratio": "9:16"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def text(fake_openrouter: FakeOpenRouter, clock: FakeClock):
    """OpenRouter with no SDK retries and a breaker of 3 failures / 30 s on a fake clock."""
    openai_connector.configure_openai(openrouter_config(fake_openrouter))
    configure_guard(
        openai_connector.PROVIDER, UpstreamGuardConfig(failure_threshold=3, cooldown_seconds=30), clock=clock
    )
    yield fake_openrouter
    await openai_connector.close_openai_client()


@pytest.fixture
async def media(fake_genai: FakeGenAI, clock: FakeClock):
    genai_connector.configure_genai(genai_config(fake_genai))
    configure_guard(
        genai_connector.PROVIDER, UpstreamGuardConfig(failure_threshold=2, cooldown_seconds=20), clock=clock
    )
    yield fake_genai
    await genai_connector.close_genai_client()


async def complete() -> str:
    return (await openai_connector.complete(model="m", messages=MESSAGES)).text


async def fail_times(n: int) -> None:
    for _ in range(n):
        with pytest.raises(UpstreamUnavailable) as caught:
            await complete()
        assert not isinstance(caught.value, CircuitOpen)


# -- circuit breaker, end to end -------------------------------------------------------------------


async def test_opens_after_consecutive_failures_and_refuses_without_calling(text: FakeOpenRouter) -> None:
    text.inject(Fault.status(500), Fault.status(503), Fault.reset())
    await fail_times(3)
    assert len(text.chat_requests) == 3
    assert guard_for("openrouter").breaker.state is CircuitState.OPEN

    with pytest.raises(CircuitOpen) as refused:
        await complete()
    assert len(text.chat_requests) == 3  # refused at once: the fake saw nothing
    assert refused.value.user_message == "The text service is failing right now; please try again in about 30 s."
    assert refused.value.provider == "openrouter"


async def test_a_success_resets_the_count(text: FakeOpenRouter) -> None:
    text.inject(Fault.status(500), Fault.status(500))
    await fail_times(2)
    assert await complete()
    text.inject(Fault.status(500), Fault.status(500))
    await fail_times(2)
    assert guard_for("openrouter").breaker.state is CircuitState.CLOSED


async def test_the_half_open_probe_closes_the_circuit(text: FakeOpenRouter, clock: FakeClock) -> None:
    text.inject(*[Fault.status(500)] * 3)
    await fail_times(3)
    clock.now += 29
    with pytest.raises(CircuitOpen, match="circuit open") as refused:
        await complete()
    assert "about 1 s" in refused.value.user_message
    clock.now += 1
    assert guard_for("openrouter").breaker.state is CircuitState.HALF_OPEN
    assert await complete()  # the probe reaches the upstream and succeeds
    assert guard_for("openrouter").breaker.state is CircuitState.CLOSED
    assert await complete()
    assert len(text.chat_requests) == 5


async def test_a_failed_probe_opens_it_again(text: FakeOpenRouter, clock: FakeClock) -> None:
    text.inject(*[Fault.status(502)] * 4)
    await fail_times(3)
    clock.now += 30
    await fail_times(1)  # the probe
    assert len(text.chat_requests) == 4
    with pytest.raises(CircuitOpen, match="circuit open"):
        await complete()
    assert len(text.chat_requests) == 4
    clock.now += 30
    assert await complete()


async def test_answers_that_prove_the_upstream_alive_do_not_open_it(text: FakeOpenRouter) -> None:
    text.inject(Fault.refusal("no"), Fault.status(401), Fault.refusal("no"), Fault.status(402), Fault.refusal("no"))
    for _ in range(5):
        with pytest.raises(Exception) as caught:
            await complete()
        assert not isinstance(caught.value, UpstreamUnavailable)
    assert guard_for("openrouter").breaker.state is CircuitState.CLOSED
    assert await complete()


async def test_rate_limits_count_and_a_long_retry_after_lengthens_the_cool_down(
    text: FakeOpenRouter, clock: FakeClock
) -> None:
    text.inject(*[Fault.status(429, retry_after=300)] * 3)  # over 120 s: the SDK does not wait for it
    for _ in range(3):
        with pytest.raises(RateLimited):
            await complete()
    with pytest.raises(CircuitOpen) as refused:
        await complete()
    assert "about 300 s" in refused.value.user_message
    clock.now += 299
    with pytest.raises(CircuitOpen):
        await complete()


async def test_video_breaker_refuses_new_videos_but_never_a_poll_of_a_paid_one(
    media: FakeGenAI, clock: FakeClock
) -> None:
    name = await genai_connector.start_video(**VIDEO)
    media.inject(Fault.status(500), Fault.status(503), route="predictLongRunning")
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await genai_connector.start_video(**VIDEO)
    with pytest.raises(CircuitOpen) as refused:
        await genai_connector.start_video(**VIDEO)
    assert refused.value.user_message == "The video service is failing right now; please try again in about 20 s."
    with pytest.raises(CircuitOpen, match="circuit open") as image_refused:
        await genai_connector.generate_image(model="gemini-2.5-flash-image", prompt="a title")
    assert "image service is failing" in image_refused.value.user_message
    assert len(media.video_generation_requests) == 3
    assert not [r for r in media.requests if r.route == "generateContent"]

    status = await genai_connector.poll_video(name)  # still polled while open
    assert status.name == name and len(media.poll_requests) == 1
    clock.now += 20
    assert await genai_connector.start_video(**VIDEO)
    assert guard_for("google").breaker.state is CircuitState.CLOSED


# -- the breaker alone ---------------------------------------------------------------------------


def test_only_one_half_open_probe_at_a_time(clock: FakeClock) -> None:
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown_seconds=10, clock=clock)
    breaker.record_failure(False, UpstreamUnavailable("x"))
    clock.now += 10
    assert breaker.admit("text") is True
    with pytest.raises(CircuitOpen):
        breaker.admit("text")
    breaker.release_probe()  # the probe was cancelled: someone else may probe
    assert breaker.admit("text") is True
    breaker.record_success(True)
    assert breaker.state is CircuitState.CLOSED and breaker.admit("text") is False


# -- the bounded line -----------------------------------------------------------------------------


async def hold_slot(provider: str, operation: str, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with guard_for(provider).call(operation):
        entered.set()
        await release.wait()


async def test_a_full_line_is_refused_and_waiters_learn_their_place(text: FakeOpenRouter) -> None:
    configure_guard("openrouter", UpstreamGuardConfig(max_concurrent=1, max_waiting=1))
    entered, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_slot("openrouter", "text", entered, release))
    await entered.wait()

    positions: list[int] = []
    told = asyncio.Event()

    async def listener(position: int) -> None:
        positions.append(position)
        told.set()

    async def waiting_call() -> str:
        queue_listener.set(listener)
        return await complete()

    waiter = asyncio.create_task(waiting_call())
    await told.wait()
    assert positions == [1]
    assert guard_for("openrouter").line.waiting == 1

    with pytest.raises(UpstreamBusy) as refused:
        await complete()
    assert refused.value.user_message == (
        "The text service is busy: 1 requests are already waiting. Please try again in a minute."
    )
    assert text.chat_requests == []

    release.set()
    await holder
    assert await waiter
    assert len(text.chat_requests) == 1
    line = guard_for("openrouter").line
    assert (line.in_flight, line.waiting) == (0, 0)


async def test_positions_move_up_and_a_cancelled_waiter_leaves_the_line() -> None:
    line = CallLine(max_concurrent=1, max_waiting=5)

    def refuse(waiting: int) -> UpstreamBusy:
        return UpstreamBusy("full")

    await line.acquire(refuse, None)
    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    changed = asyncio.Event()

    def listener(name: str):
        async def tell(position: int) -> None:
            seen[name].append(position)
            changed.set()

        return tell

    tasks = {}
    for name in "abc":
        changed.clear()
        tasks[name] = asyncio.create_task(line.acquire(refuse, listener(name)))
        await changed.wait()
    assert seen == {"a": [1], "b": [2], "c": [3]}

    changed.clear()
    tasks["a"].cancel()
    await asyncio.gather(tasks["a"], return_exceptions=True)
    await changed.wait()
    while seen["c"][-1] != 2:
        changed.clear()
        await changed.wait()
    assert seen["b"][-1] == 1 and line.waiting == 2

    line.release()  # the holder leaves: b gets the slot
    await tasks["b"]
    assert line.in_flight == 1 and line.waiting == 1
    line.release()
    await tasks["c"]
    line.release()
    assert (line.in_flight, line.waiting) == (0, 0)


async def test_media_calls_wait_in_their_own_line(media: FakeGenAI) -> None:
    configure_guard("google", UpstreamGuardConfig(max_concurrent=1, max_waiting=0))
    entered, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_slot("google", "video_start", entered, release))
    await entered.wait()
    with pytest.raises(UpstreamBusy) as refused:
        await genai_connector.start_video(**VIDEO)
    assert "video service is busy" in refused.value.user_message
    assert await openai_connector_is_free()
    release.set()
    await holder
    assert await genai_connector.start_video(**VIDEO)


async def openai_connector_is_free() -> bool:
    """The text guard is separate from the media one."""
    return guard_for("openrouter").line.in_flight == 0


# -- per-call-type timeouts and observation ----------------------------------------------------------


async def test_vision_calls_have_their_own_timeout(fake_openrouter: FakeOpenRouter) -> None:
    openai_connector.configure_openai(openrouter_config(fake_openrouter, vision_timeout_seconds=0.2))
    try:
        fake_openrouter.inject(Fault.timeout(3))
        vision = [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}
        ]
        with pytest.raises(UpstreamUnavailable, match="timed out"):
            await openai_connector.complete(model="m", messages=vision)
    finally:
        await openai_connector.close_openai_client()


async def test_video_polls_have_their_own_timeout(fake_genai: FakeGenAI) -> None:
    genai_connector.configure_genai(genai_config(fake_genai, video_poll_timeout_seconds=0.2))
    try:
        name = await genai_connector.start_video(**VIDEO)
        fake_genai.inject(Fault.timeout(3), route="operation")
        with pytest.raises(UpstreamUnavailable):
            await genai_connector.poll_video(name)
    finally:
        await genai_connector.close_genai_client()


async def test_every_call_is_observed(text: FakeOpenRouter) -> None:
    records: list[CallRecord] = []
    add_call_observer(records.append)
    try:
        text.inject(Fault.status(500), Fault.refusal("no"))
        with pytest.raises(UpstreamUnavailable):
            await complete()
        with pytest.raises(ContentBlocked):
            await complete()
        await complete()
    finally:
        remove_call_observer(records.append)
    assert [(r.provider, r.operation, r.outcome, r.status) for r in records] == [
        ("openrouter", "text", "UpstreamUnavailable", 500),
        ("openrouter", "text", "ContentBlocked", None),
        ("openrouter", "text", "ok", None),
    ]
