"""One admin rule for every platform: operators, the user of a private chat, and a group's admins
as the platform names them; a platform check that fails means no."""

from __future__ import annotations

import pytest

from bot.core.context import ChatRef, Invocation, UserRef, is_chat_admin

OPERATORS = frozenset({"telegram:1", "2"})


def invocation(user: str, *, private: bool = False, platform: str = "telegram", check: object = None) -> Invocation:
    return Invocation(
        command="schedule",
        user=UserRef(platform, user),
        chat=ChatRef(platform, "-100", is_private=private),
        is_admin=check,  # type: ignore[arg-type]
    )


async def yes() -> bool:
    return True


async def no() -> bool:
    return False


async def broken() -> bool:
    raise RuntimeError("the platform did not answer")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (invocation("1"), True),  # an operator by platform:id
        (invocation("2", platform="discord"), True),  # an operator by bare id
        (invocation("9", private=True), True),  # the user of a private chat
        (invocation("9"), False),  # a group with no platform check
        (invocation("9", check=yes), True),
        (invocation("9", check=no), False),
        (invocation("9", check=broken), False),
    ],
)
async def test_who_administers_a_chat(case: Invocation, expected: bool) -> None:
    assert await is_chat_admin(case, OPERATORS) is expected
