"""Prometheus metrics for the whole process, in one registry served at ``/metrics`` (bot/health.py).

They live in services so that every layer that counts something can reach them: the chat core counts
commands, the budgets code adds spend (``record_spend``), and the connectors report each upstream call
through ``connectors.resilience``'s observer hook (``install_upstream_observer``), since connectors
import nothing above them. Circuit states and line sizes are read from the guards at scrape time.

Metric names (all prefixed ``reelwright_``):

* ``commands_total{command,outcome}``, ``command_seconds{command}``
* ``upstream_calls_total{provider,operation,outcome}``, ``upstream_call_seconds{provider,operation}``,
  ``upstream_errors_total{provider,operation,error,status}``
* ``circuit_state{provider}`` (0 closed, 1 half-open, 2 open), ``upstream_in_flight{provider}``,
  ``upstream_waiting{provider}``
* ``jobs_pending`` (generation jobs not yet delivered; set at scrape time)
* ``spend_usd_total{provider}``: estimated spend; incremented by the budgets code with ``record_spend``
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors import resilience
from connectors.resilience import CallRecord, CircuitState

REGISTRY = CollectorRegistry(auto_describe=True)

COMMANDS = Counter(
    "reelwright_commands", "Commands handled, by name and outcome", ["command", "outcome"], registry=REGISTRY
)
COMMAND_SECONDS = Histogram(
    "reelwright_command_seconds",
    "Time to a command's final answer",
    ["command"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
UPSTREAM_CALLS = Counter(
    "reelwright_upstream_calls",
    "Calls to an AI upstream, by provider, operation and outcome (ok or the error type)",
    ["provider", "operation", "outcome"],
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "reelwright_upstream_call_seconds",
    "Latency of AI upstream calls (SDK retries included)",
    ["provider", "operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "reelwright_upstream_errors",
    "Failed AI upstream calls, by provider, operation, error type and HTTP status ('' when none)",
    ["provider", "operation", "error", "status"],
    registry=REGISTRY,
)
JOBS_PENDING = Gauge("reelwright_jobs_pending", "Generation jobs not yet delivered", registry=REGISTRY)
SPEND = Counter(
    "reelwright_spend_usd",
    "Estimated spend in US dollars, by provider (incremented by the budgets code)",
    ["provider"],
    registry=REGISTRY,
)

_STATE_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def record_command(command: str, outcome: str, seconds: float) -> None:
    COMMANDS.labels(command, outcome).inc()
    COMMAND_SECONDS.labels(command).observe(seconds)


def record_spend(provider: str, usd: float) -> None:
    """Add estimated spend; for the cost ledger, which knows prices."""
    if usd > 0:
        SPEND.labels(provider).inc(usd)


def observe_upstream_call(record: CallRecord) -> None:
    """The ``connectors.resilience`` observer: one upstream call finished (or was refused)."""
    UPSTREAM_CALLS.labels(record.provider, record.operation, record.outcome).inc()
    UPSTREAM_SECONDS.labels(record.provider, record.operation).observe(record.seconds)
    if record.outcome != "ok":
        status = "" if record.status is None else str(record.status)
        UPSTREAM_ERRORS.labels(record.provider, record.operation, record.outcome, status).inc()


def install_upstream_observer() -> None:
    """Count every upstream call the connectors make (idempotent)."""
    resilience.add_call_observer(observe_upstream_call)


class GuardCollector(Collector):
    """Circuit states and line sizes, read from the connectors' guards when scraped."""

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "reelwright_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", labels=["provider"]
        )
        in_flight = GaugeMetricFamily("reelwright_upstream_in_flight", "Calls in flight", labels=["provider"])
        waiting = GaugeMetricFamily("reelwright_upstream_waiting", "Calls waiting in line", labels=["provider"])
        for provider, guard in sorted(resilience.guards().items()):
            state.add_metric([provider], _STATE_VALUES[guard.breaker.state])
            in_flight.add_metric([provider], guard.line.in_flight)
            waiting.add_metric([provider], guard.line.waiting)
        yield state
        yield in_flight
        yield waiting

    def describe(self) -> Iterator[Metric]:
        return iter(())


REGISTRY.register(GuardCollector())


def render_metrics() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(REGISTRY)
