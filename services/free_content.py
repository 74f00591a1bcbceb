"""Free-form copy of any requested kind: captions, scripts, hashtags, titles and descriptions."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from services.config import service_config
from services.prompts import clean_prompt
from services.structured import Structured, generate_structured
from services.usage import Usage

COPYWRITER = "You are a copywriter for short-video creators. Answer in JSON only."
MAX_HASHTAGS = 15

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
        system=COPYWRITER,
        user=f"Write {guide}.\nBrief: {brief}",
    )
    content = result.value.content.strip()
    return FreeContent(kind=kind, brief=brief, content=content, usage=result.usage)


class PostCopy(BaseModel):
    """What a creator pastes next to a finished video when posting it."""

    title: str = Field(description="A scroll-stopping title of at most 80 characters")
    description: str = Field(description="Two or three sentences for the video's description")
    hashtags: list[str] = Field(description="8 to 15 relevant hashtags, each starting with #")

    def text(self) -> str:
        return f"{self.title}\n\n{self.description}\n\n{' '.join(hashtags(self.hashtags))}".strip()


def hashtags(tags: list[str]) -> list[str]:
    """Tags as the apps link them: one word of letters, digits and underscores after a ``#``, no repeats."""
    seen: set[str] = set()
    result = []
    for tag in tags:
        word = "".join(ch for ch in tag if ch.isalnum() or ch == "_")
        if word and word.lower() not in seen:
            seen.add(word.lower())
            result.append(f"#{word}")
    return result[:MAX_HASHTAGS]


async def generate_post_copy(title: str, narration: Sequence[str]) -> Structured[PostCopy]:
    """The title, description and hashtags of a finished video, from its working title and its
    narration, line by line."""
    config = service_config()
    outline = "\n".join(f"{number}. {line}" for number, line in enumerate(narration, start=1))
    user = (
        f"Write the title, description and hashtags for this short video.\nTitle idea: {title}\nNarration:\n{outline}"
    )
    return await generate_structured(
        PostCopy, model=config.content_model, system=COPYWRITER, user=user[: config.max_prompt_chars * 2]
    )
