"""Free-form copy of any requested kind: captions, scripts, hashtags, titles and descriptions."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.config import service_config
from services.prompts import clean_prompt
from services.structured import generate_structured
from services.usage import Usage

KIND_GUIDES = {
    "caption": "a social caption of 1-3 sentences with a hook in the first line",
    "script": "a voice-over script for a 30-60 second video, in short spoken lines",
    "hashtags": "10-20 relevant hashtags, mixing broad and niche ones, space separated",
    "title": "a title and a 2-3 sentence description for a short video",
    "hook": "five alternative opening hooks of at most 12 words each, one per line",
}


class FreeContentDraft(BaseModel):
    content: str = Field(description="The requested text, ready to paste")


class FreeContent(BaseModel):
    kind: str
    brief: str
    content: str
    usage: Usage


async def generate_free_content(brief: str, *, kind: str = "caption") -> FreeContent:
    """Write ``kind`` of copy for ``brief``; unknown kinds are welcome and described to the model as-is."""
    config = service_config()
    brief = clean_prompt(brief, what="brief", max_chars=config.max_prompt_chars)
    kind = clean_prompt(kind, what="kind", max_chars=40).lower()
    guide = KIND_GUIDES.get(kind, f"a piece of writing of this kind: {kind}")
    result = await generate_structured(
        FreeContentDraft,
        model=config.content_model,
        system="You are a copywriter for short-video creators. Answer in JSON only.",
        user=f"Write {guide}.\nBrief: {brief}",
    )
    content = result.value.content.strip()
    return FreeContent(kind=kind, brief=brief, content=content, usage=result.usage)
