"""Character memory: a user's analysed characters by name, so later /story, /video and /thumbnail
can reuse one with ``character=<name>`` (``last`` picks the newest). Stored in the database when
one is configured, else in memory for the process's lifetime."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import delete, select

from connectors.database import sessions
from services.character import CharacterProfile
from services.memory import UserMemory
from services.store.models import CharacterRecord

MAX_CHARACTERS_PER_USER = 50


class CharacterBook(Protocol):
    async def remember(self, user_key: str, profile: CharacterProfile) -> None: ...

    async def find(self, user_key: str, name: str) -> CharacterProfile | None: ...

    async def names(self, user_key: str) -> list[str]: ...


class InMemoryCharacterBook:
    def __init__(self, memory: UserMemory) -> None:
        self.memory = memory

    async def remember(self, user_key: str, profile: CharacterProfile) -> None:
        self.memory.remember_character(user_key, profile)

    async def find(self, user_key: str, name: str) -> CharacterProfile | None:
        return self.memory.character(user_key, name)

    async def names(self, user_key: str) -> list[str]:
        return self.memory.character_names(user_key)


class DatabaseCharacterBook:
    async def remember(self, user_key: str, profile: CharacterProfile) -> None:
        """Insert or replace the user's character of that name (names are case-insensitive)."""
        profile = CharacterProfile.model_validate(profile.model_dump())  # a copy made with model_copy is unchecked
        key = profile.name.strip().lower()
        async with sessions().begin() as session:
            await session.execute(
                delete(CharacterRecord).where(CharacterRecord.user_key == user_key, CharacterRecord.name_key == key)
            )
            session.add(
                CharacterRecord(user_key=user_key, name=profile.name, name_key=key, profile=profile.model_dump_json())
            )

    async def find(self, user_key: str, name: str) -> CharacterProfile | None:
        query = select(CharacterRecord).where(CharacterRecord.user_key == user_key)
        if name.strip().lower() == "last":
            query = query.order_by(CharacterRecord.created_at.desc(), CharacterRecord.id.desc()).limit(1)
        else:
            query = query.where(CharacterRecord.name_key == name.strip().lower())
        async with sessions()() as session:
            record = (await session.scalars(query)).first()
        return CharacterProfile.model_validate_json(record.profile) if record else None

    async def names(self, user_key: str) -> list[str]:
        async with sessions()() as session:
            rows = await session.scalars(
                select(CharacterRecord.name)
                .where(CharacterRecord.user_key == user_key)
                .order_by(CharacterRecord.created_at)
                .limit(MAX_CHARACTERS_PER_USER)
            )
            return list(rows)
