"""Characters: a vision model profiles the character in an uploaded image, and the book keeps each
user's profiles by name so later /story, /video and /thumbnail reuse one with ``character=<name>``
(``last`` picks the newest).

The profile's ``visual_description`` is written to be pasted into later story, video and
thumbnail prompts so that the character stays the same across them.
"""

from __future__ import annotations

import base64
from typing import Protocol

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select

from connectors.database import sessions
from services.config import service_config
from services.images import check_image
from services.prompts import clean_prompt, storable
from services.store.models import CharacterRecord
from services.structured import generate_structured
from services.usage import Usage

#: Characters the book keeps per user (the oldest go first): their names, listed when a name is
#: unknown, then fit one Discord message (2000 characters) at up to 60 characters each.
MAX_CHARACTERS_PER_USER = 20


class CharacterProfile(BaseModel):
    name: str = Field(description="A short name for the character")
    summary: str = Field(description="One sentence: who or what this is")
    appearance: str = Field(description="Body, face, hair, clothing, colours, distinctive marks")
    personality: str = Field(description="Personality the image suggests")
    art_style: str = Field(description="Rendering style of the image (photo, anime, 3D, ...)")
    visual_description: str = Field(
        description="One dense paragraph to reuse verbatim in image/video prompts to keep the character consistent"
    )

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: str) -> str:
        """A profile is model output that goes into the store as it is: no NUL or other character
        the store cannot hold."""
        return storable(value)


class CharacterAnalysis(BaseModel):
    profile: CharacterProfile
    image_mime_type: str
    width: int
    height: int
    usage: Usage


UNNAMED_CHARACTER = "Character"

CHARACTER_SYSTEM = (
    "You are a character designer for short videos. Describe the character in the image precisely "
    "enough that an image or video model can redraw it consistently. Answer in JSON only."
)


async def analyze_character_from_image(
    image: bytes, *, name: str | None = None, notes: str | None = None
) -> CharacterAnalysis:
    """Profile the character in ``image``; the image is checked by content before the paid call."""
    config = service_config()
    checked = check_image(image, max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels)
    instruction = "Analyse the main character in this image."
    if name:
        name = clean_prompt(name, what="name", max_chars=60)
        instruction += f' Call the character "{name}".'
    if notes:
        instruction += " Creator's notes: " + clean_prompt(notes, what="notes", max_chars=config.max_prompt_chars)
    data_url = f"data:{checked.mime_type};base64,{base64.b64encode(checked.data).decode()}"
    result = await generate_structured(
        CharacterProfile,
        model=config.vision_model,
        system=CHARACTER_SYSTEM,
        user=[{"type": "text", "text": instruction}, {"type": "image_url", "image_url": {"url": data_url}}],
        temperature=0.3,
    )
    profile = result.value
    if name or not profile.name.strip():
        profile = profile.model_copy(update={"name": name or UNNAMED_CHARACTER})
    return CharacterAnalysis(
        profile=profile,
        image_mime_type=checked.mime_type,
        width=checked.width,
        height=checked.height,
        usage=result.usage,
    )


def character_prompt_note(profile: CharacterProfile | None) -> str:
    """The sentence other services add to a prompt to keep ``profile``'s character consistent."""
    if profile is None:
        return ""
    return f" The main character is {profile.name}: {profile.visual_description}"


class CharacterBook(Protocol):
    """Where a user's analysed characters are kept by name."""

    async def remember(self, user_key: str, profile: CharacterProfile) -> None: ...

    async def find(self, user_key: str, name: str) -> CharacterProfile | None: ...

    async def names(self, user_key: str) -> list[str]: ...


class DatabaseCharacterBook:
    """The character book in the database, so characters outlive a restart and every process sees them."""

    async def remember(self, user_key: str, profile: CharacterProfile) -> None:
        """Insert or replace the user's character of that name (names are case-insensitive); past
        ``MAX_CHARACTERS_PER_USER`` the oldest are forgotten."""
        profile = CharacterProfile.model_validate(profile.model_dump())  # a copy made with model_copy is unchecked
        key = profile.name.strip().lower()
        async with sessions().begin() as session:
            await session.execute(
                delete(CharacterRecord).where(CharacterRecord.user_key == user_key, CharacterRecord.name_key == key)
            )
            session.add(
                CharacterRecord(user_key=user_key, name=profile.name, name_key=key, profile=profile.model_dump_json())
            )
            await session.flush()
            kept = (
                select(CharacterRecord.id)
                .where(CharacterRecord.user_key == user_key)
                .order_by(CharacterRecord.id.desc())
                .limit(MAX_CHARACTERS_PER_USER)
                .scalar_subquery()
            )
            await session.execute(
                delete(CharacterRecord).where(CharacterRecord.user_key == user_key, CharacterRecord.id.not_in(kept))
            )

    async def find(self, user_key: str, name: str) -> CharacterProfile | None:
        """The user's character called ``name``, or the newest for ``last``."""
        query = select(CharacterRecord).where(CharacterRecord.user_key == user_key)
        if name.strip().lower() == "last":
            query = query.order_by(CharacterRecord.id.desc()).limit(1)
        else:
            query = query.where(CharacterRecord.name_key == name.strip().lower())
        async with sessions()() as session:
            record = (await session.scalars(query)).first()
        return CharacterProfile.model_validate_json(record.profile) if record else None

    async def names(self, user_key: str) -> list[str]:
        """The user's character names, oldest first."""
        async with sessions()() as session:
            rows = await session.scalars(
                select(CharacterRecord.name).where(CharacterRecord.user_key == user_key).order_by(CharacterRecord.id)
            )
            return list(rows)
