"""Characters: a vision model profiles the character in an uploaded image, and the book keeps each
user's profiles by name so later /story, /video and /thumbnail reuse one with ``character=<name>``
(``last`` picks the newest).

The profile's ``visual_description`` is written to be pasted into later story, video and
thumbnail prompts so that the character stays the same across them. The image itself is kept
too (in MEDIA_DIR, one file per distinct image) so that a video can start from it and a thumbnail
can take it as its reference.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import uuid
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import ColumnElement, Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.database import sessions
from services.config import service_config
from services.images import check_image
from services.prompts import clean_prompt, storable
from services.store.models import CharacterRecord
from services.structured import generate_structured
from services.usage import Usage

log = logging.getLogger(__name__)

#: Characters the book keeps per user (the oldest go first): their names, listed when a name is
#: unknown, then fit one Discord message (2000 characters) at up to 60 characters each.
MAX_CHARACTERS_PER_USER = 20
#: Where character images are kept, under MEDIA_DIR.
CHARACTER_IMAGES_DIR = "characters"


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


class CharacterImage(BaseModel):
    """The image a character was analysed from (checked by content when it arrived): a video's
    first frame, a thumbnail's reference."""

    data: bytes = Field(repr=False)
    mime_type: str


class CharacterBook(Protocol):
    """Where a user's analysed characters are kept by name."""

    async def remember(self, user_key: str, profile: CharacterProfile, image: CharacterImage | None = None) -> None: ...

    async def find(self, user_key: str, name: str) -> CharacterProfile | None: ...

    async def image_of(self, user_key: str, name: str) -> CharacterImage | None: ...

    async def names(self, user_key: str) -> list[str]: ...


class DatabaseCharacterBook:
    """The character book in the database, so characters outlive a restart and every process sees
    them; their images are files under ``media_dir`` named by their SHA-256, which the rows point to."""

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir

    async def remember(self, user_key: str, profile: CharacterProfile, image: CharacterImage | None = None) -> None:
        """Insert or replace the user's character of that name (names are case-insensitive) with its
        ``image``; past ``MAX_CHARACTERS_PER_USER`` the oldest are forgotten. The image files of the
        rows this drops go too, unless another row still shows the same image."""
        profile = CharacterProfile.model_validate(profile.model_dump())  # a copy made with model_copy is unchecked
        key = profile.name.strip().lower()
        image_path = await asyncio.to_thread(self._keep_image, image.data) if image is not None else None
        async with sessions().begin() as session:
            replaced = await self._drop(session, CharacterRecord.user_key == user_key, CharacterRecord.name_key == key)
            session.add(
                CharacterRecord(
                    user_key=user_key,
                    name=profile.name,
                    name_key=key,
                    profile=profile.model_dump_json(),
                    image_path=image_path,
                    image_mime=image.mime_type if image is not None else None,
                )
            )
            await session.flush()
            overflow = list(
                await session.scalars(
                    select(CharacterRecord.id)
                    .where(CharacterRecord.user_key == user_key)
                    .order_by(CharacterRecord.id.desc())
                    .offset(MAX_CHARACTERS_PER_USER)
                )
            )
            forgotten = await self._drop(session, CharacterRecord.id.in_(overflow)) if overflow else set()
        await self._remove_unused_images(replaced | forgotten)

    async def find(self, user_key: str, name: str) -> CharacterProfile | None:
        """The user's character called ``name``, or the newest for ``last``."""
        async with sessions()() as session:
            record = (await session.scalars(self._named(user_key, name))).first()
        return CharacterProfile.model_validate_json(record.profile) if record else None

    async def image_of(self, user_key: str, name: str) -> CharacterImage | None:
        """The image of the user's character called ``name`` (``last``: the newest), read only now;
        None for an unknown name, a character kept without an image, or an image file gone missing."""
        async with sessions()() as session:
            record = (await session.scalars(self._named(user_key, name))).first()
        if record is None or record.image_path is None:
            return None
        path = self.media_dir / record.image_path
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            log.warning("the image of character %s is missing: %s", record.id, path)
            return None
        return CharacterImage(data=data, mime_type=record.image_mime or "image/png")

    async def names(self, user_key: str) -> list[str]:
        """The user's character names, oldest first."""
        async with sessions()() as session:
            rows = await session.scalars(
                select(CharacterRecord.name).where(CharacterRecord.user_key == user_key).order_by(CharacterRecord.id)
            )
            return list(rows)

    @staticmethod
    def _named(user_key: str, name: str) -> Select[CharacterRecord]:
        query = select(CharacterRecord).where(CharacterRecord.user_key == user_key)
        if name.strip().lower() == "last":
            return query.order_by(CharacterRecord.id.desc()).limit(1)
        return query.where(CharacterRecord.name_key == name.strip().lower())

    @staticmethod
    async def _drop(session: AsyncSession, *where: ColumnElement[bool]) -> set[str]:
        """Delete the rows matching ``where``; the image paths they held."""
        paths = set(await session.scalars(select(CharacterRecord.image_path).where(*where)))
        await session.execute(delete(CharacterRecord).where(*where))
        return {path for path in paths if path is not None}

    def _keep_image(self, data: bytes) -> str:
        """Write ``data`` once under its SHA-256 (an upload seen before is not written again); its
        path relative to ``media_dir``."""
        relative = f"{CHARACTER_IMAGES_DIR}/{hashlib.sha256(data).hexdigest()}.img"
        path = self.media_dir / relative
        if path.is_file() and path.stat().st_size == len(data):
            return relative
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")  # two writers never share a part file
        try:
            part.write_bytes(data)
            part.replace(path)
        finally:
            part.unlink(missing_ok=True)
        return relative

    async def _remove_unused_images(self, paths: set[str]) -> None:
        """Delete the files of ``paths`` that no row points to any more (checked after the commit)."""
        if not paths:
            return
        async with sessions()() as session:
            used = set(
                await session.scalars(
                    select(CharacterRecord.image_path).where(CharacterRecord.image_path.in_(paths)).distinct()
                )
            )
        for path in sorted(paths - used):
            await asyncio.to_thread((self.media_dir / path).unlink, missing_ok=True)
