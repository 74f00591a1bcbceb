"""Thumbnails: Imagen in enterprise mode, a Gemini image model with a plain API key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from connectors import genai_connector
from services.characters import CharacterProfile, character_prompt_note
from services.config import service_config
from services.images import check_image
from services.prompts import clean_prompt
from services.usage import Usage

MAX_TITLE_CHARS = 300


class ThumbnailRequest(BaseModel):
    title: str
    story_summary: str | None = None
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    character: CharacterProfile | None = None
    character_image: bytes | None = None


class Thumbnail(BaseModel):
    image: bytes = Field(repr=False)
    mime_type: str
    model: str
    usage: Usage


def thumbnail_prompt(title: str, summary: str | None, character: CharacterProfile | None) -> str:
    about = f" The video is about: {summary}." if summary else ""
    return (
        f'A bold, high-contrast YouTube/TikTok thumbnail for a video titled "{title}".{about}'
        f"{character_prompt_note(character)} One clear focal subject, expressive emotion, "
        "uncluttered background, no small text."
    )


def validate_thumbnail_request(request: ThumbnailRequest) -> ThumbnailRequest:
    """The request with its title and summary cleaned; bad text is refused before a job row or a paid call."""
    title = clean_prompt(request.title, what="thumbnail title", max_chars=MAX_TITLE_CHARS)
    summary = (
        clean_prompt(request.story_summary, what="story summary", max_chars=service_config().max_prompt_chars)
        if request.story_summary
        else None
    )
    return request.model_copy(update={"title": title, "story_summary": summary})


async def generate_thumbnail_image(request: ThumbnailRequest) -> Thumbnail:
    """One thumbnail image for a title (and optionally a story summary and a character)."""
    config = service_config()
    request = validate_thumbnail_request(request)
    title, summary = request.title, request.story_summary
    reference_mime = "image/png"
    if request.character_image is not None:
        reference_mime = check_image(
            request.character_image, max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels
        ).mime_type
    model = config.thumbnail_model
    image = await genai_connector.generate_image(
        model=model,
        prompt=thumbnail_prompt(title, summary, request.character),
        aspect_ratio=request.aspect_ratio,
        reference_image=request.character_image,
        reference_mime_type=reference_mime,
    )
    return Thumbnail(image=image.image_bytes, mime_type=image.mime_type, model=model, usage=Usage(images=1))
