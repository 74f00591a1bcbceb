"""Loopback fakes for tests: the sandbox's AI upstreams with faults and full history, the Bot API, Discord."""

from tests.fakes.ai import FakeGenAI, FakeOpenRouter
from tests.fakes.faults import Fault, RecordedRequest

__all__ = ["FakeGenAI", "FakeOpenRouter", "Fault", "RecordedRequest"]
