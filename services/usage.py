"""Token and media usage of one service call, summed across the model calls it made."""

from __future__ import annotations

from pydantic import BaseModel


class Usage(BaseModel):
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    video_seconds: int = 0
    images: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            model_calls=self.model_calls + other.model_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            video_seconds=self.video_seconds + other.video_seconds,
            images=self.images + other.images,
        )
