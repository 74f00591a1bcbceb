"""Guardrails through the real composition root (start_runtime) against the fakes: rate limits,
budgets, confirmation of expensive commands, permissions, and usage recorded from real usage."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from bot.core.context import ChatRef, Invocation, UserRef
from bot.core.dispatcher import SANDBOX_FOOTER
from tests.bot.helpers import RecordingResponder
from tests.conftest import RuntimeFactory
from tests.fakes import FakeGenAI, FakeOpenRouter


def command(
    name: str, text: str, *, user: str = "7", chat: str = "-100", platform: str = "telegram", **extra: Any
) -> Invocation:
    return Invocation(
        command=name,
        user=UserRef(platform=platform, id=user, name="u"),
        chat=ChatRef(platform=platform, id=chat, is_private=False),
        text=text,
        **extra,
    )


async def test_a_burst_from_one_user_is_cut_at_the_limit(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter
) -> None:
    runtime = await make_runtime(rate_limit="5/minute")
    responders = [RecordingResponder() for _ in range(100)]
    replies = await asyncio.gather(
        *(runtime.core.handle(command("write", "a caption about ramen"), r) for r in responders)
    )
    assert all(len(r.delivered) == 1 for r in responders)  # exactly one answer each
    done = [r for r in replies if not r.is_error]
    slowed = [r for r in replies if r.is_error and "Slow down" in r.text]
    assert len(done) == 5 and len(slowed) == 95
    assert len(fake_openrouter.chat_requests) == 5  # no paid call beyond the limit
    other_user = await runtime.core.handle(command("write", "x", user="8"), RecordingResponder())
    assert not other_user.is_error


async def test_a_command_over_budget_is_refused_before_the_paid_call(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter
) -> None:
    runtime = await make_runtime(budget_user_daily_usd=0.005)
    first = await runtime.core.handle(command("write", "short"), RecordingResponder())
    assert not first.is_error
    refused = await runtime.core.handle(command("longstory", "a saga segments=60"), RecordingResponder())
    assert refused.is_error
    assert "daily budget" in refused.text and "left" in refused.text and "resets in" in refused.text
    assert len(fake_openrouter.chat_requests) == 1


async def test_chat_budget_applies_to_everyone_in_it(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime(budget_chat_daily_usd=1.0, confirm_above_usd=0)
    refused = await runtime.core.handle(command("video", "a cat duration=8", user="9"), RecordingResponder())
    assert refused.is_error and "this chat's daily budget" in refused.text
    assert fake_genai.requests == []


async def test_expensive_video_asks_for_confirmation_first(make_runtime: RuntimeFactory, fake_genai: FakeGenAI) -> None:
    runtime = await make_runtime(confirm_above_usd=1.0)
    asked = await runtime.core.handle(command("video", "a cat surfing duration=8"), RecordingResponder())
    assert asked.confirmation and "/confirm" in asked.text and "$3.20" in asked.text
    assert fake_genai.requests == []
    stranger = await runtime.core.handle(command("confirm", asked.confirmation, user="8"), RecordingResponder())
    assert stranger.is_error and "Nothing to confirm" in stranger.text
    progress = RecordingResponder()
    done = await runtime.core.handle(command("confirm", asked.confirmation), progress)
    assert not done.is_error, done.text
    assert done.media and done.media[0].kind == "video"
    assert len(fake_genai.video_generation_requests) == 1
    again = await runtime.core.handle(command("confirm", asked.confirmation), RecordingResponder())
    assert again.is_error
    assert len(fake_genai.video_generation_requests) == 1
    assert runtime.jobs is not None
    [job] = await runtime.jobs.list_jobs("telegram:7")
    assert job.cost == Decimal("3.20")


async def test_real_usage_is_recorded_and_shown(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime()
    await runtime.core.handle(command("story", "a dragon segments=3"), RecordingResponder())
    assert runtime.ledger is not None
    assert await runtime.ledger.flush() == 1
    spend = await runtime.ledger.spent("user", "telegram:7")
    assert spend.today > 0
    shown = await runtime.core.handle(command("usage", ""), RecordingResponder())
    assert "Your spend" in shown.text and "This chat" not in shown.text

    async def yes() -> bool:
        return True

    admin_view = await runtime.core.handle(replace(command("usage", ""), is_admin=yes), RecordingResponder())
    assert "This chat" in admin_view.text and "telegram:7" in admin_view.text


async def test_allow_lists_refuse_others_without_a_paid_call(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter
) -> None:
    runtime = await make_runtime(allowed_users="telegram:7,42", allowed_roles="creator")
    assert not (await runtime.core.handle(command("write", "x"), RecordingResponder())).is_error
    refused = await runtime.core.handle(command("write", "x", user="8"), RecordingResponder())
    assert refused.is_error and "private" in refused.text
    no_role = await runtime.core.handle(
        command("write", "x", user="42", platform="discord", roles=("member",)), RecordingResponder()
    )
    assert no_role.is_error and "roles" in no_role.text
    with_role = await runtime.core.handle(
        command("write", "x", user="42", platform="discord", roles=("creator",)), RecordingResponder()
    )
    assert not with_role.is_error
    assert len(fake_openrouter.chat_requests) == 2


async def test_admin_users_setting_grants_admin_commands(make_runtime: RuntimeFactory) -> None:
    runtime = await make_runtime(admin_users="telegram:7")
    allowed = await runtime.core.handle(command("schedule", "list"), RecordingResponder())
    assert not allowed.is_error
    refused = await runtime.core.handle(command("schedule", "list", user="8"), RecordingResponder())
    assert refused.is_error and "Only admins" in refused.text


async def test_a_bad_expensive_request_gets_its_error_not_a_price(
    make_runtime: RuntimeFactory, fake_genai: FakeGenAI
) -> None:
    """/video's own checks come before the cost question: a request that can never run is refused
    at once, not priced and refused only after the user confirmed."""
    runtime = await make_runtime(confirm_above_usd=1.0)
    for text, message in [
        ("duration=8", "Describe the video"),
        ("segment=3", "you have none yet"),
        ("a cat character=ghost", "don't know a character"),
    ]:
        reply = await runtime.core.handle(command("video", text), RecordingResponder())
        assert reply.is_error and message in reply.text and reply.confirmation is None, (text, reply.text)
    asked = await runtime.core.handle(command("video", "a valid cat duration=8"), RecordingResponder())
    assert asked.confirmation is not None
    assert fake_genai.requests == []


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("story", "a dragon segment=6", "Unknown option segment=, did you mean segments=?"),
        ("video", "a cat durations=8", "Unknown option durations=, did you mean duration=?"),
    ],
)
async def test_a_misspelled_option_is_refused_before_any_paid_call(
    make_runtime: RuntimeFactory,
    fake_openrouter: FakeOpenRouter,
    fake_genai: FakeGenAI,
    name: str,
    text: str,
    message: str,
) -> None:
    runtime = await make_runtime()
    responder = RecordingResponder()
    reply = await runtime.core.handle(command(name, text), responder)
    assert responder.delivered == [reply]
    assert reply.is_error
    assert reply.text.splitlines()[0] == f"⚠️ {message}"
    assert fake_openrouter.requests == [] and fake_genai.requests == []


async def test_an_equals_sign_that_is_no_option_stays_in_the_prompt(
    make_runtime: RuntimeFactory, fake_openrouter: FakeOpenRouter
) -> None:
    runtime = await make_runtime()
    reply = await runtime.core.handle(command("story", "why e=mc2 matters segments=2"), RecordingResponder())
    assert not reply.is_error
    [request] = fake_openrouter.chat_requests
    assert "why e=mc2 matters" in json.dumps(request.json)


async def test_the_queued_notice_of_a_sandbox_video_is_not_labelled_as_sandbox_output(
    make_runtime: RuntimeFactory, redis_url: str
) -> None:
    """The notice is ours, not the fake upstream's: the sandbox label belongs on the video itself."""
    prefix = f"reelwright:test:{uuid.uuid4().hex}"
    runtime = await make_runtime(
        google_api_key=None, redis_url=redis_url, redis_key_prefix=prefix, job_queue_name=f"{prefix}:jobs"
    )
    assert "media" in runtime.sandbox_upstreams
    reply = await runtime.core.handle(command("video", "a cat surfing"), RecordingResponder())
    assert not reply.is_error
    assert reply.text.startswith("⏳ Job ") and "is queued" in reply.text
    assert SANDBOX_FOOTER not in reply.text
