"""/schedule through the chat core: admins only, add / list / remove with clear errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.core.catalog import build_commands
from bot.core.context import ChatRef
from bot.core.dispatcher import ChatCore
from services.schedules import ScheduleService
from tests.bot.helpers import RecordingResponder, in_process_jobs, invocation
from tests.fakes import FakeGenAI, FakeOpenRouter

Upstreams = tuple[FakeOpenRouter, FakeGenAI]
GROUP = ChatRef(platform="test", id="-42", is_private=False)


async def yes() -> bool:
    return True


async def no() -> bool:
    return False


async def broken() -> bool:
    raise ConnectionError("getChatMember failed")


@pytest.fixture
async def core(database: str, upstreams: Upstreams, tmp_path: Path) -> ChatCore:
    return ChatCore(build_commands(jobs=in_process_jobs(tmp_path / "media"), schedules=ScheduleService()))


@pytest.mark.parametrize("is_admin", [None, no, broken], ids=["unknown", "member", "check-failed"])
async def test_only_admins_may_schedule(core: ChatCore, is_admin: object) -> None:
    request = replace(invocation("schedule", "add cooking 09:30 Europe/Berlin"), chat=GROUP, is_admin=is_admin)
    reply = await core.handle(request, RecordingResponder())
    assert reply.is_error and "Only admins" in reply.text


async def test_admin_adds_lists_and_removes(core: ChatCore) -> None:
    def admin(text: str):  # type: ignore[no-untyped-def]
        return replace(invocation("schedule", text), is_admin=yes)

    added = await core.handle(admin("add indie game dev 9:30 Europe/Berlin"), RecordingResponder())
    assert not added.is_error and "indie game dev" in added.text
    assert "every day at 09:30 (Europe/Berlin)" in added.text
    assert added.text.endswith("The first post comes at the next 09:30.")
    assert "9:30" not in added.text.replace("09:30", "")
    listing = await core.handle(admin("list"), RecordingResponder())
    assert "#1 · indie game dev" in listing.text
    for bad, message in [
        ("add cooking", "niche, a time and a time zone"),
        ("add cooking 9:30 Nowhere/Land", "time zone"),
        ("add cooking 9:30 localtime", "'localtime' is not a time zone I know; use an IANA name"),
        ("add cooking 9:30 Factory", "is not a time zone I know"),
        ("add cooking 9:30 posix/Europe/Berlin", "is not a time zone I know"),
        ("remove abc", "Which schedule"),
        ("remove 99", "no schedule 99"),
        ("explode", "Use /schedule"),
    ]:
        reply = await core.handle(admin(bad), RecordingResponder())
        assert reply.is_error and message in reply.text, (bad, reply.text)
    removed = await core.handle(admin("remove 1"), RecordingResponder())
    assert not removed.is_error
    assert "no trend schedules" in (await core.handle(admin("list"), RecordingResponder())).text
