"""Resilience around each upstream: a circuit breaker, a bounded line of callers, call observation.

Every paid call a connector makes goes through its provider's ``UpstreamGuard``:

1. **Circuit breaker.** After ``failure_threshold`` consecutive failures of the kind waiting can fix
   (``UpstreamUnavailable``, ``RateLimited``: timeouts, resets, 5xx, 429 after the SDK's own retries),
   the circuit opens and calls are refused at once, without touching the upstream, with a message
   naming the service and the wait. After ``cooldown_seconds`` one half-open probe goes through:
   success closes the circuit, failure opens it again. Answers that prove the upstream is alive
   (content blocked, out of credits, a bad key, an unusable body) count as successes for the
   breaker: they are not outages, and opening on them would only hide the real message.
2. **A bounded line.** At most ``max_concurrent`` calls in flight and at most ``max_waiting`` waiting
   (FIFO). A waiting caller is told its position through ``queue_listener`` (a context variable the
   chat core sets per command); a caller who finds the line full is refused with ``UpstreamBusy``.
3. **Observation.** Each call's provider, operation, outcome, HTTP status and duration go to an
   optional observer (the metrics module registers one), so connectors never import the layers above.

No retry loop lives here: retries stay the SDKs' own. The breaker and the line are small classes
rather than a library: ``aiobreaker`` is unmaintained and ``purgatory`` reads the wall clock and
raises its own exception types, while these need an injected clock for tests, our own error tree,
state for ``/readyz`` and ``/metrics``, and futures created only inside the running loop (tests
switch event loops between cases; an ``asyncio.Semaphore`` would stay bound to the first one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import ParamSpec, TypeVar

from connectors.errors import RateLimited, UpstreamError, UpstreamUnavailable

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: What a caller waiting in line is told: its 1-based position, each time it changes.
QueueListener = Callable[[int], Awaitable[None]]
queue_listener: ContextVar[QueueListener | None] = ContextVar("reelwright_queue_listener", default=None)

#: The service names users read, by operation.
SERVICE_NAMES: dict[str, str] = {
    "text": "text service",
    "vision": "image analysis service",
    "video_start": "video service",
    "video_poll": "video service",
    "image": "image service",
    "speech": "narration service",
}


def service_name(operation: str) -> str:
    return SERVICE_NAMES.get(operation, "AI service")


class CircuitOpen(UpstreamUnavailable):
    """Refused without calling the upstream: its circuit is open after consecutive failures."""


class UpstreamBusy(UpstreamUnavailable):
    """Refused without calling the upstream: too many calls are in flight and the line is full."""


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(exc: BaseException) -> bool:
    """Failures that say the upstream is down or overloaded (not our refusals, not its answers)."""
    if isinstance(exc, CircuitOpen | UpstreamBusy):
        return False
    return isinstance(exc, UpstreamUnavailable | RateLimited)


class CircuitBreaker:
    """Consecutive-failure circuit breaker with one half-open probe at a time."""

    def __init__(
        self,
        provider: str,
        *,
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.provider = provider
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self.failures = 0
        self.opened_until = 0.0
        self._state = CircuitState.CLOSED
        self._probing = False

    @property
    def state(self) -> CircuitState:
        """The state now; an open circuit whose cool-down has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self.clock() >= self.opened_until:
            return CircuitState.HALF_OPEN
        return self._state

    def retry_in(self) -> float:
        """Seconds until a probe may go through (0 when closed)."""
        return max(0.0, self.opened_until - self.clock())

    def _refusal(self, operation: str) -> CircuitOpen:
        wait = max(1, round(self.retry_in()) or 1)
        name = service_name(operation)
        return CircuitOpen(
            f"circuit open for {self.provider} after {self.failures} consecutive failures",
            provider=self.provider,
            user_message=f"The {name} is failing right now; please try again in about {wait} s.",
        )

    def check(self, operation: str) -> None:
        """Refuse at once while open (cheap; does not take the half-open probe)."""
        state = self.state
        if state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and self._probing):
            raise self._refusal(operation)

    def admit(self, operation: str) -> bool:
        """Let a call through or raise ``CircuitOpen``; True when this call is the half-open probe."""
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._state = CircuitState.HALF_OPEN
            self._probing = True
            log.info("circuit for %s half-open: sending one probe", self.provider)
            return True
        raise self._refusal(operation)

    def record_success(self, probe: bool) -> None:
        if probe or self._state is not CircuitState.CLOSED:
            log.info("circuit for %s closed again", self.provider)
        self._probing = False
        self.failures = 0
        self._state = CircuitState.CLOSED

    def record_failure(self, probe: bool, exc: BaseException) -> None:
        self.failures += 1
        if probe:
            self._probing = False
        if probe or self.failures >= self.failure_threshold:
            cooldown = self.cooldown_seconds
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float) and retry_after > cooldown:
                cooldown = float(retry_after)
            self.opened_until = self.clock() + cooldown
            if self._state is not CircuitState.OPEN:
                log.warning(
                    "circuit for %s opened for %.0f s after %d consecutive failures (last: %s)",
                    self.provider,
                    cooldown,
                    self.failures,
                    type(exc).__name__,
                )
            self._state = CircuitState.OPEN

    def release_probe(self) -> None:
        """The probe ended without an outcome (cancelled): let another caller probe."""
        self._probing = False


class CallLine:
    """At most ``max_concurrent`` holders; at most ``max_waiting`` waiters, served first come first served."""

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        self.max_concurrent = max(1, max_concurrent)
        self.max_waiting = max(0, max_waiting)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._moved: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _notify_moved(self) -> None:
        moved, self._moved = self._moved, None
        if moved is not None and not moved.done():
            moved.set_result(None)

    async def acquire(self, refuse: Callable[[int], UpstreamError], listener: QueueListener | None) -> None:
        """Take a slot, waiting in line if needed; ``refuse(waiting)`` builds the error for a full line."""
        if self.in_flight < self.max_concurrent and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_waiting:
            raise refuse(len(self._waiters))
        loop = asyncio.get_running_loop()
        ticket: asyncio.Future[None] = loop.create_future()
        self._waiters.append(ticket)
        reported = 0
        try:
            while not ticket.done():
                position = self._waiters.index(ticket) + 1
                if listener is not None and position != reported:
                    reported = position
                    with contextlib.suppress(Exception):
                        await listener(position)
                    if ticket.done():
                        break
                if self._moved is None or self._moved.done() or self._moved.get_loop() is not loop:
                    self._moved = loop.create_future()
                await asyncio.wait({ticket, self._moved}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if ticket.done() and not ticket.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                ticket.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(ticket)
                self._notify_moved()
            raise

    def release(self) -> None:
        """Hand the slot to the first waiter, or free it."""
        while self._waiters:
            ticket = self._waiters.popleft()
            if not ticket.done():
                ticket.set_result(None)  # the slot passes on; in_flight stays the same
                self._notify_moved()
                return
        self.in_flight = max(0, self.in_flight - 1)


@dataclass(frozen=True)
class CallRecord:
    """One finished upstream call, for metrics."""

    provider: str
    operation: str
    outcome: str
    status: int | None
    seconds: float


CallObserver = Callable[[CallRecord], None]
_observers: list[CallObserver] = []


def add_call_observer(observer: CallObserver) -> None:
    """Register a function told about every upstream call (idempotent)."""
    if observer not in _observers:
        _observers.append(observer)


def remove_call_observer(observer: CallObserver) -> None:
    with contextlib.suppress(ValueError):
        _observers.remove(observer)


def _observe(record: CallRecord) -> None:
    for observer in list(_observers):
        try:
            observer(record)
        except Exception:
            log.exception("a call observer failed")


def outcome_of(exc: BaseException | None) -> tuple[str, int | None]:
    if exc is None:
        return "ok", None
    if isinstance(exc, UpstreamError):
        return type(exc).__name__, exc.status
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", None
    return type(exc).__name__, None


@dataclass(frozen=True)
class UpstreamGuardConfig:
    """Breaker and line sizes for one upstream."""

    failure_threshold: int = 5
    cooldown_seconds: float = 30.0
    max_concurrent: int = 1000
    max_waiting: int = 1000


class UpstreamGuard:
    """The breaker, the line and the observation for one provider."""

    def __init__(
        self, provider: str, config: UpstreamGuardConfig | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        config = config or UpstreamGuardConfig()
        self.provider = provider
        self.config = config
        self.clock = clock
        self.breaker = CircuitBreaker(
            provider, failure_threshold=config.failure_threshold, cooldown_seconds=config.cooldown_seconds, clock=clock
        )
        self.line = CallLine(config.max_concurrent, config.max_waiting)

    def _busy(self, operation: str) -> Callable[[int], UpstreamError]:
        def refuse(waiting: int) -> UpstreamError:
            return UpstreamBusy(
                f"{self.provider}: {self.line.in_flight} calls in flight and {waiting} waiting",
                provider=self.provider,
                user_message=f"The {service_name(operation)} is busy: {waiting} requests are already waiting. "
                "Please try again in a minute.",
            )

        return refuse

    @contextlib.asynccontextmanager
    async def call(self, operation: str) -> AsyncIterator[None]:
        """Guard one upstream call: refuse while open, wait in line, record the outcome."""
        try:
            self.breaker.check(operation)
            await self.line.acquire(self._busy(operation), queue_listener.get())
        except UpstreamError as exc:
            _observe(CallRecord(self.provider, operation, *outcome_of(exc), seconds=0.0))
            raise
        started = self.clock()
        error: BaseException | None = None
        probe = False
        try:
            probe = self.breaker.admit(operation)
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.line.release()
            if error is not None and counts_as_failure(error):
                self.breaker.record_failure(probe, error)
            elif error is None or (isinstance(error, UpstreamError) and not isinstance(error, CircuitOpen)):
                self.breaker.record_success(probe)
            elif probe:
                self.breaker.release_probe()
            _observe(CallRecord(self.provider, operation, *outcome_of(error), seconds=self.clock() - started))

    @contextlib.asynccontextmanager
    async def observe(self, operation: str) -> AsyncIterator[None]:
        """Observe a call that is neither refused nor counted (polling paid work already running)."""
        started = self.clock()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            _observe(CallRecord(self.provider, operation, *outcome_of(error), seconds=self.clock() - started))


_guards: dict[str, UpstreamGuard] = {}


def configure_guard(
    provider: str, config: UpstreamGuardConfig | None = None, *, clock: Clock = time.monotonic
) -> UpstreamGuard:
    """A fresh guard for ``provider`` (state dropped), registered for health and metrics."""
    guard = UpstreamGuard(provider, config, clock=clock)
    _guards[provider] = guard
    return guard


def guard_for(provider: str) -> UpstreamGuard:
    """The provider's guard, built with defaults on first use."""
    guard = _guards.get(provider)
    if guard is None:
        guard = configure_guard(provider)
    return guard


def guards() -> dict[str, UpstreamGuard]:
    """Every configured guard by provider (for ``/readyz`` and ``/metrics``)."""
    return dict(_guards)


P = ParamSpec("P")
R = TypeVar("R")


def guarded(
    provider: str, operation: str, *, counted: bool = True
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate a connector function so each call goes through ``provider``'s guard.

    ``counted=False`` only observes the call (no breaker, no line): for polling paid work.
    """

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            guard = guard_for(provider)
            async with guard.call(operation) if counted else guard.observe(operation):
                return await function(*args, **kwargs)

        return wrapper

    return decorate
