"""What the bot remembers per user between commands: named characters and the last story.

In memory and bounded (least recently used users are forgotten); the durable store of the jobs
issue replaces this behind the same methods.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from services.character import CharacterProfile
from services.story import Story

MAX_USERS = 10_000
MAX_CHARACTERS_PER_USER = 20


@dataclass
class _UserState:
    characters: OrderedDict[str, CharacterProfile] = field(default_factory=OrderedDict)
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

    def remember_character(self, user_key: str, profile: CharacterProfile) -> None:
        characters = self._state(user_key).characters
        characters.pop(profile.name.lower(), None)
        characters[profile.name.lower()] = profile
        while len(characters) > MAX_CHARACTERS_PER_USER:
            characters.popitem(last=False)

    def character(self, user_key: str, name: str) -> CharacterProfile | None:
        """A named character, or the most recent one for ``last``."""
        characters = self._state(user_key).characters
        if name.lower() == "last":
            return next(reversed(characters.values()), None)
        return characters.get(name.lower())

    def character_names(self, user_key: str) -> list[str]:
        return [profile.name for profile in self._state(user_key).characters.values()]

    def remember_story(self, user_key: str, story: Story) -> None:
        self._state(user_key).last_story = story

    def last_story(self, user_key: str) -> Story | None:
        return self._state(user_key).last_story
