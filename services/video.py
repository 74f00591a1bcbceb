"""Veo videos: submit once, expose the operation name at once, poll with backoff, fetch safely.

The operation name is handed to ``on_operation`` the moment it is known, so a caller can store it
before anything else happens; ``resume_operation`` polls an existing operation instead of paying for
a new one. Paid work is never abandoned: transient poll failures are polled through, and a video
still rendering at the deadline is only reported late (``on_late``, once) and polled on until Veo
answers or the hard deadline passes. Both clocks count from the submission, across restarts
(``already_elapsed``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, Field

from connectors import genai_connector
from connectors.errors import ContentBlocked, RateLimited, UpstreamError, UpstreamUnavailable
from services.characters import CharacterProfile, character_prompt_note
from services.config import service_config
from services.images import check_image
from services.prompts import clean_prompt
from services.usage import Usage

log = logging.getLogger(__name__)

AspectRatio = Literal["16:9", "9:16"]
ClipSeconds = Literal[4, 6, 8]
POLL_GROWTH = 1.5


class VideoRequest(BaseModel):
    prompt: str
    duration_seconds: ClipSeconds = 8
    aspect_ratio: AspectRatio = "9:16"
    image: bytes | None = None
    negative_prompt: str | None = None
    character: CharacterProfile | None = None


class VideoProgress(BaseModel):
    stage: Literal["submitted", "rendering", "downloading", "done"]
    elapsed_seconds: float
    polls: int = 0
    operation_name: str | None = None


class VideoResult(BaseModel):
    video: bytes = Field(repr=False)
    mime_type: str = "video/mp4"
    operation_name: str
    duration_seconds: int
    usage: Usage


class VideoFailed(UpstreamError):
    """Veo finished the operation with an error instead of a video."""


class VideoAbandoned(UpstreamError):
    """Veo still had not finished the operation at the hard deadline; it is no longer polled."""


OnOperation = Callable[[str], Awaitable[None]]
OnProgress = Callable[[VideoProgress], Awaitable[None]]
OnLate = Callable[[float], Awaitable[None]]


def duration_text(seconds: float) -> str:
    """A span for people: "45 min", "6 h", "1.5 h"."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def abandoned_message(hard_deadline_seconds: float) -> str:
    return (
        f"The video service did not finish this video within {duration_text(hard_deadline_seconds)}, so it was "
        "not delivered and is not counted in your usage. Please ask again with /video; a shorter clip or a "
        "simpler prompt usually renders faster."
    )


def video_prompt(request: VideoRequest) -> str:
    return request.prompt + character_prompt_note(request.character)


def _checked(request: VideoRequest) -> tuple[VideoRequest, str]:
    """The request with its prompt cleaned, and the image's type as read from its content."""
    config = service_config()
    prompt = clean_prompt(request.prompt, what="video prompt", max_chars=config.max_prompt_chars)
    mime = "image/png"
    if request.image is not None:
        mime = check_image(
            request.image, max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels
        ).mime_type
    return request.model_copy(update={"prompt": prompt}), mime


def validate_video_request(request: VideoRequest) -> VideoRequest:
    """Refuse bad input before the paid call: the prompt, and the image by content."""
    return _checked(request)[0]


async def generate_video_from_payload(
    request: VideoRequest,
    *,
    on_operation: OnOperation | None = None,
    on_progress: OnProgress | None = None,
    on_late: OnLate | None = None,
    resume_operation: str | None = None,
    already_elapsed: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VideoResult:
    """Generate (or resume) one Veo video and return its verified MP4 bytes.

    ``already_elapsed`` is how long ago a resumed operation was submitted. ``on_late`` is awaited
    once, when the deadline is crossed during this call (not again for an operation resumed after
    it); polling then goes on, at the same cap, until the hard deadline.
    """
    config = service_config()
    started = time.monotonic() - already_elapsed
    late_told = already_elapsed >= config.video_deadline_seconds
    request, mime = _checked(request)

    async def report(stage: Literal["submitted", "rendering", "downloading", "done"], polls: int) -> None:
        if on_progress is not None:
            await on_progress(
                VideoProgress(stage=stage, elapsed_seconds=time.monotonic() - started, polls=polls, operation_name=name)
            )

    if resume_operation:
        name = resume_operation
    else:
        name = await genai_connector.start_video(
            model=config.video_model,
            prompt=video_prompt(request),
            duration_seconds=request.duration_seconds,
            aspect_ratio=request.aspect_ratio,
            image=request.image,
            image_mime_type=mime,
            negative_prompt=request.negative_prompt,
        )
        log.info("video operation started: %s", name)
    if on_operation is not None:
        await on_operation(name)
    await report("submitted", 0)

    delay = config.video_poll_initial_seconds
    polls = 0
    while True:
        await sleep(delay)
        delay = min(delay * POLL_GROWTH, config.video_poll_max_seconds)
        polls += 1
        try:
            status = await genai_connector.poll_video(name)
        except (UpstreamUnavailable, RateLimited) as exc:
            log.warning("poll %d of %s failed, will poll again: %s", polls, name, exc)
        else:
            if status.done:
                break
            await report("rendering", polls)
        elapsed = time.monotonic() - started
        if elapsed > config.video_hard_deadline_seconds:
            raise VideoAbandoned(
                f"video operation {name} not done after {elapsed:.0f} s; no longer polled",
                provider=genai_connector.PROVIDER,
                user_message=abandoned_message(config.video_hard_deadline_seconds),
            )
        if not late_told and elapsed > config.video_deadline_seconds:
            late_told = True
            log.warning("video operation %s is late (%.0f s); polling on", name, elapsed)
            if on_late is not None:
                await on_late(elapsed)

    if status.filtered_reasons:
        raise ContentBlocked(
            f"video filtered: {'; '.join(status.filtered_reasons)}",
            provider=genai_connector.PROVIDER,
            user_message="The video service's safety filter blocked this video. Try rewording the prompt.",
        )
    if status.error:
        raise VideoFailed(
            f"video operation {name} failed: {status.error}",
            provider=genai_connector.PROVIDER,
            user_message="The video service could not make this video. Please try again.",
        )
    await report("downloading", polls)
    data = await genai_connector.fetch_video(status, max_bytes=config.video_max_bytes)
    await report("done", polls)
    return VideoResult(
        video=data,
        operation_name=name,
        duration_seconds=request.duration_seconds,
        usage=Usage(video_seconds=request.duration_seconds),
    )
