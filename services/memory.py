"""What the bot remembers per user between commands: the last story, for /video and /storyboard.

In memory and bounded (least recently used users are forgotten).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from services.story import Story

MAX_USERS = 10_000


@dataclass
class _UserState:
    last_story: Story | None = None


class UserMemory:
    def __init__(self, max_users: int = MAX_USERS) -> None:
        self._users: OrderedDict[str, _UserState] = OrderedDict()
        self._max_users = max_users

    def _state(self, user_key: str) -> _UserState:
        state = self._users.pop(user_key, None) or _UserState()
        self._users[user_key] = state
        while len(self._users) > self._max_users:
            self._users.popitem(last=False)
        return state

    def remember_story(self, user_key: str, story: Story) -> None:
        self._state(user_key).last_story = story

    def last_story(self, user_key: str) -> Story | None:
        return self._state(user_key).last_story
