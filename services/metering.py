"""Per-command usage metering: every paid model call adds its real usage (tokens from the API
response, video seconds, images) to the meter of the command it runs under (a context variable,
so concurrent commands never mix and no service needs to know who asked)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from services.usage import Usage


@dataclass
class Meter:
    entries: list[tuple[str, Usage]] = field(default_factory=list)

    def add(self, model: str, usage: Usage) -> None:
        self.entries.append((model, usage))


current_meter: ContextVar[Meter | None] = ContextVar("reelwright_meter", default=None)


def meter_usage(model: str, usage: Usage) -> None:
    """Record a paid call's usage on the running command's meter (a no-op outside a command)."""
    meter = current_meter.get()
    if meter is not None:
        meter.add(model, usage)
