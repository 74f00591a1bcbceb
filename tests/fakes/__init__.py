"""Loopback fakes of the AI upstreams; they ship in ``bot.sandbox`` and tests reach them here."""

from bot.sandbox.fake_genai import FakeGenAI
from bot.sandbox.fake_openrouter import FakeOpenRouter
from bot.sandbox.faults import Fault, RecordedRequest

__all__ = ["FakeGenAI", "FakeOpenRouter", "Fault", "RecordedRequest"]
