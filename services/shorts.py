"""/short: one idea to a finished short, as one durable parent job whose clips are durable child jobs.

The parent job runs the pipeline; every step keeps what it made on disk under
``MEDIA_DIR/shorts/<job id>/`` and is skipped when its file is already there, so a restart (or
``/jobs retry``) redoes only what is missing:

1. the story (segments fitted to Veo's 4/6/8 s), ``story.json``;
2. one child clip job per segment, all created in one transaction, run concurrently through
   ``JobService.run`` (submitted once, resumed by operation name, paid once); a clip that fails is
   made once more with the same prompt;
3. beside the clips: the narration per segment (``narration-N.wav``), the thumbnail and the title,
   description and hashtags (``copy.json``);
4. the stitch (``short.mp4`` and ``short.srt``) and each clip's first frame;
5. ``short.json``, the manifest that delivery reads.

Money: the short's one reservation (taken from the command) covers every step. Each paid step is
recorded in the ledger as it happens: clips on their own rows, the rest on the parent's ``cost``.
When the short ends, the reservation is settled to what was spent under it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from connectors.errors import ReelwrightError, UserInputError
from services.budgets import Reservation
from services.characters import CharacterProfile
from services.config import ServiceConfig, service_config
from services.files import write_whole
from services.free_content import PostCopy, generate_post_copy
from services.metering import Meter, current_meter
from services.narration import clean_voice, fit_to, narrate
from services.prompts import clean_prompt
from services.stitch import (
    JoinRequest,
    PieceRequest,
    PieceResult,
    Segment,
    StitchFailed,
    StitchRequest,
    StitchResult,
    encode_piece,
    first_frame_jpeg,
    join_pieces,
    stitch,
    video_bitrate,
)
from services.story import Story, StoryRequest, StorySegment, generate_story_segments
from services.thumbnail import ThumbnailRequest, generate_thumbnail_image
from services.usage import Usage
from services.video import AspectRatio

if TYPE_CHECKING:
    from services.jobs import JobService
    from services.store.models import JobRecord

log = logging.getLogger(__name__)

SHORT_KIND = "short"
CLIP_KIND = "clip"
MIN_SHORT_SEGMENTS = 3
MAX_SHORT_SEGMENTS = 8
#: A clip is made at most this often per run of its short: once, and once more if that fails.
CLIP_TRIES = 2
#: Seconds of the longest clip a story segment asks for: what an estimate must assume per segment.
MAX_CLIP_SECONDS = 8
NO_VOICE = "none"
CHARACTER_IMAGE = "character.img"
#: The first frames on the contact sheet: 320 x 568 for a vertical clip.
FRAME_LONG_SIDE = 568
T = TypeVar("T")


class ShortPayload(BaseModel):
    """What the creator asked for, stored on the parent job's row."""

    chat_key: str | None = None
    reservation: Reservation | None = None
    #: Spent on this short before ``reservation`` was taken (a retry's reservation covers only what follows).
    spent_before: Decimal = Decimal("0")
    idea: str
    segments: int
    aspect: AspectRatio = "9:16"
    character: CharacterProfile | None = None
    #: The character's picture, kept in the short's folder: every clip starts from it, and the thumbnail.
    character_image_path: str | None = None
    voice: str | None = None  # None: no narration, only the clips' own sound
    captions: bool = True
    byte_budget: int


class ShortManifest(BaseModel):
    """A finished short's files (paths under MEDIA_DIR) and what the chat shows beside them."""

    story: Story
    video: str
    srt: str
    duration: float
    size: int
    thumbnail: str | None = None
    thumbnail_mime: str | None = None
    copy_text: str | None = None
    frames: list[str | None] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


ShortStage = Literal["writing", "story", "clips", "narrating", "stitching"]


class ShortProgress(BaseModel):
    """A step of a short, for the one status line its command shows (and the storyboard at ``story``)."""

    stage: ShortStage
    done: int = 0
    total: int = 0
    story: Story | None = None
    #: At ``stitching``: each clip's first frame (a JPEG's path; None where it could not be read).
    frames: list[str | None] = Field(default_factory=list)


class ShortFailed(ReelwrightError):
    """A short could not be finished; what it made so far stays, and /jobs retry finishes it."""


ShortProgressSink = Callable[[ShortProgress], Awaitable[None]]
LateSink = Callable[[float], Awaitable[None]]


def short_dir(media_dir: Path, job_id: str) -> Path:
    """Where a short keeps what it has made, so that a restart or a retry reuses it."""
    return media_dir / "shorts" / job_id


def narration_voice(voice: str | None) -> str | None:
    """The voice a /short option names, checked before money moves: None for ``none`` (no narration)."""
    if voice is not None and voice.strip().lower() == NO_VOICE:
        return None
    return clean_voice(voice)


def check_short_request(idea: str, segments: int, byte_budget: int) -> str:
    """Refuse what cannot become a short before anything is reserved: the idea cleaned, the number of
    segments in range, and a short of that many longest clips fitting the platform's upload limit."""
    if not MIN_SHORT_SEGMENTS <= segments <= MAX_SHORT_SEGMENTS:
        raise UserInputError(f"segments must be between {MIN_SHORT_SEGMENTS} and {MAX_SHORT_SEGMENTS}.")
    video_bitrate(byte_budget, segments * MAX_CLIP_SECONDS, pieces=segments)
    return clean_prompt(idea, what="idea", max_chars=service_config().max_prompt_chars)


def _read_model(path: Path, model: type[BaseModel]) -> BaseModel | None:
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValidationError, ValueError):
        return None


@dataclass
class ShortPipeline:
    """Runs one short job to its manifest on top of ``JobService`` (rows, leases, the ledger)."""

    jobs: JobService

    async def run(
        self,
        job: JobRecord,
        payload: ShortPayload,
        progress: ShortProgressSink | None,
        on_late: LateSink | None,
    ) -> None:
        """The short from its story to its manifest. Every step is skipped when its file is already
        there; ``on_late`` hears once that a clip is past the video deadline."""
        work = short_dir(self.jobs.media_dir, job.id)

        async def tell(update: ShortProgress) -> None:
            if progress is not None:
                await progress(update)

        story = await self._story(job, payload, work, tell)
        await tell(ShortProgress(stage="story", total=len(story.segments), story=story))
        clip_ids = await self.jobs.clip_jobs(job, payload, story)
        total = len(clip_ids)
        late_told = False

        async def clip_late(elapsed: float) -> None:
            nonlocal late_told
            if not late_told and on_late is not None:
                late_told = True
                await on_late(elapsed)

        bitrate = video_bitrate(payload.byte_budget, sum(seg.duration_seconds for seg in story.segments), pieces=total)
        # Without captions or a voice nothing is drawn or mixed: the clips may be joined as they are.
        plain = not payload.captions and payload.voice is None
        clips: list[Path | None] = [None] * total
        made = 0
        announced: asyncio.Future[None] | None = None

        async def announce_clips_in() -> None:
            """The first-frames sheet and "stitching": shown while the last pieces encode, not before.
            A courtesy: if it cannot be shown, the short goes on without it."""
            try:
                frames = await self._frames(work, clips)
                await tell(ShortProgress(stage="stitching", done=total, total=total, story=story, frames=frames))
            except Exception:
                log.warning("could not show short %s's clips", job.id, exc_info=True)

        narrations: list[asyncio.Future[Path | None]] = []

        async def segment(index: int) -> PieceResult | Path:
            """The segment's clip, then (with its narration) its encoded piece: as soon as both exist."""
            nonlocal made, announced
            clip = await self._clip(clip_ids[index], index + 1, clip_late)
            clips[index] = clip
            made += 1
            await tell(ShortProgress(stage="clips", done=made, total=total))
            if made == total and not narrations[index].done():
                await tell(ShortProgress(stage="narrating", done=total, total=total))
            try:
                narration = await narrations[index]
            except ReelwrightError as exc:
                raise ShortFailed(
                    str(exc), user_message=f"segment {index + 1}'s narration: {exc.user_message}"
                ) from exc
            if made == total and announced is None:
                announced = asyncio.ensure_future(announce_clips_in())
            if plain:
                return clip
            return await self._piece(
                work, index + 1, clip, story.segments[index].narration, narration, payload, bitrate
            )

        await tell(ShortProgress(stage="clips", done=0, total=total))
        extras: asyncio.Future[tuple[tuple[str, str] | None, str | None]] | None = None
        try:
            narrations.extend(
                asyncio.ensure_future(self._narration(job, work, seg, payload.voice)) for seg in story.segments
            )
            # Neither waits for a clip: both are ready long before the last one is.
            thumbnail_and_copy = asyncio.gather(
                self._optional(self._thumbnail(job, payload, work, story), "thumbnail"),
                self._optional(self._copy(job, work, story), "copy"),
            )
            extras = thumbnail_and_copy
            results = await asyncio.gather(*(segment(i) for i in range(total)), return_exceptions=True)
            thumbnail, copy_text = await thumbnail_and_copy
            if announced is not None:
                await announced
        finally:
            if announced is not None:
                announced.cancel()
            if extras is not None:
                extras.cancel()
            for task in narrations:
                task.cancel()
            await asyncio.gather(
                *narrations, *([extras] if extras else []), *([announced] if announced else []), return_exceptions=True
            )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: the short resumes after a restart
        errors = [result for result in results if isinstance(result, Exception)]
        for error in errors:
            if not isinstance(error, ReelwrightError):
                log.error("short %s: a segment failed unexpectedly", job.id, exc_info=error)
        if errors:
            raise ShortFailed("short pipeline failed", user_message=self._failure_message(job, errors))
        if plain:
            joined = await self._stitch_whole(work, [r for r in results if isinstance(r, Path)], story, payload)
        else:
            pieces = [result for result in results if isinstance(result, PieceResult)]
            joined = await self._join(work, pieces, story, payload)
        notes = [note for note in (story.note,) if note]
        if thumbnail is None:
            notes.append("The thumbnail could not be made this time; /thumbnail makes one.")
        manifest = ShortManifest(
            story=story,
            video=str(joined.video),
            srt=str(joined.srt),
            duration=joined.duration,
            size=joined.size,
            thumbnail=thumbnail[0] if thumbnail else None,
            thumbnail_mime=thumbnail[1] if thumbnail else None,
            copy_text=copy_text,
            frames=[str(path) if path else None for path in self._frame_paths(work, total)],
            notes=notes,
        )
        manifest_path = work / "short.json"
        await asyncio.to_thread(write_whole, manifest_path, manifest.model_dump_json(indent=1).encode())
        await self.jobs.finish_short(job.id, manifest_path)

    # -- the stitch -----------------------------------------------------------------------------------

    async def _piece(
        self,
        work: Path,
        number: int,
        clip: Path,
        text: str,
        narration: Path | None,
        payload: ShortPayload,
        bitrate: int,
    ) -> PieceResult:
        """One segment encoded on its own (captions burned, narration mixed) while other clips render."""
        try:
            return await encode_piece(
                PieceRequest(
                    segment=Segment(clip, text, narration),
                    output=work / f"piece-{number}.mp4",
                    aspect=payload.aspect,
                    captions=payload.captions,
                    video_bitrate=bitrate,
                    long_side=service_config().short_long_side,
                )
            )
        except StitchFailed as exc:
            raise ShortFailed(str(exc), user_message=f"segment {number}: its clip could not be prepared") from exc

    async def _join(self, work: Path, pieces: list[PieceResult], story: Story, payload: ShortPayload) -> StitchResult:
        """The pieces joined by stream copy; if that cannot be done within the upload limit, the whole
        short encoded at once from the clips (slower, same result)."""
        texts = tuple(piece.text for piece in pieces)
        try:
            return await join_pieces(
                JoinRequest(
                    pieces=tuple(pieces), texts=texts, output=work / "short.mp4", byte_budget=payload.byte_budget
                )
            )
        except StitchFailed as exc:
            log.warning("joining the pieces of %s failed (%s); stitching the whole short", work.name, exc)
        return await self._stitch_whole(work, await self.jobs.clip_paths(work.name), story, payload)

    async def _stitch_whole(self, work: Path, clips: list[Path], story: Story, payload: ShortPayload) -> StitchResult:
        """The whole short in one stitch: stream-copied when the clips allow it, else encoded at once."""
        narrations = [work / f"narration-{seg.number}.wav" for seg in story.segments]
        try:
            return await stitch(
                StitchRequest(
                    segments=tuple(
                        Segment(clip, seg.narration, narration if narration.is_file() else None)
                        for clip, seg, narration in zip(clips, story.segments, narrations, strict=True)
                    ),
                    output=work / "short.mp4",
                    aspect=payload.aspect,
                    captions=payload.captions,
                    byte_budget=payload.byte_budget,
                    long_side=service_config().short_long_side,
                )
            )
        except StitchFailed as exc:
            raise ShortFailed(
                str(exc),
                user_message=f"Putting the clips together failed. /jobs retry {work.name[:8]} tries again without "
                "paying for the clips again.",
            ) from exc

    @staticmethod
    def _frame_paths(work: Path, total: int) -> list[Path | None]:
        paths = [work / f"frame-{number}.jpg" for number in range(1, total + 1)]
        return [path if path.is_file() else None for path in paths]

    async def _frames(self, work: Path, clips: list[Path | None]) -> list[str | None]:
        """Each clip's first frame, for the sheet creators look at before they read."""

        def extract() -> list[str | None]:
            found: list[str | None] = []
            for number, clip in enumerate(clips, 1):
                path = work / f"frame-{number}.jpg"
                try:
                    if clip is not None and not path.is_file():
                        write_whole(path, first_frame_jpeg(clip, max_side=FRAME_LONG_SIDE))
                except StitchFailed as exc:
                    log.warning("no first frame of clip %d: %s", number, exc)
                found.append(str(path) if path.is_file() else None)
            return found

        return await asyncio.to_thread(extract)

    # -- the steps ----------------------------------------------------------------------------------

    async def _paid(self, job: JobRecord, call: Awaitable[T]) -> T:
        """Run one paid call under its own meter and record what it used on the short at once."""
        meter = Meter()
        token = current_meter.set(meter)
        try:
            return await call
        finally:
            current_meter.reset(token)
            await self.jobs.record_short_usage(job, meter.entries)

    async def _story(self, job: JobRecord, payload: ShortPayload, work: Path, tell: ShortProgressSink) -> Story:
        path = work / "story.json"
        stored = await asyncio.to_thread(_read_model, path, Story)
        if isinstance(stored, Story):
            return stored
        await tell(ShortProgress(stage="writing"))
        request = StoryRequest(idea=payload.idea, segments=payload.segments, character=payload.character)
        story = await self._paid(job, generate_story_segments(request))
        if len(story.segments) < 1:
            raise ShortFailed(
                "empty story", user_message="The AI model wrote no segments for this idea. Please try again."
            )
        await asyncio.to_thread(write_whole, path, story.model_dump_json(indent=1).encode())
        return story

    async def _clip(self, clip_id: str, number: int, on_late: LateSink) -> Path:
        """The clip's MP4 on disk: made, resumed, or made once more after a failure."""
        outcome = None
        for _ in range(CLIP_TRIES):
            outcome = await self.jobs.run_clip(clip_id, on_late)
            if outcome.ok and outcome.media_path is not None:
                return outcome.media_path
            if not await self.jobs.clip_may_try_again(clip_id):
                break
            log.warning("clip %d (%s) failed (%s); making it once more", number, clip_id, outcome.error)
        raise ShortFailed(
            f"clip {number} failed",
            user_message=f"segment {number}: {outcome.error if outcome else 'no clip'}",
        )

    async def _narration(self, job: JobRecord, work: Path, segment: StorySegment, voice: str | None) -> Path | None:
        """The segment's narration, sped up a little if the voice runs longer than the clip."""
        if voice is None or not segment.narration.strip():
            return None
        path = work / f"narration-{segment.number}.wav"
        if await asyncio.to_thread(path.is_file):
            return path
        spoken_path = work / f"narration-{segment.number}.spoken.wav"  # kept as paid for, before fitting
        if await asyncio.to_thread(spoken_path.is_file):
            spoken = await asyncio.to_thread(spoken_path.read_bytes)
        else:
            spoken = (await self._paid(job, narrate(segment.narration, voice))).wav
            await asyncio.to_thread(write_whole, spoken_path, spoken)
        fitted = await asyncio.to_thread(fit_to, spoken, segment.duration_seconds)
        await asyncio.to_thread(write_whole, path, fitted)
        return path

    async def _thumbnail(self, job: JobRecord, payload: ShortPayload, work: Path, story: Story) -> tuple[str, str]:
        for extension, mime in (("png", "image/png"), ("jpg", "image/jpeg")):
            existing = work / f"thumbnail.{extension}"
            if await asyncio.to_thread(existing.is_file):
                return str(existing), mime
        summary = " ".join(segment.narration for segment in story.segments[:3])
        reference = (
            await asyncio.to_thread(Path(payload.character_image_path).read_bytes)
            if payload.character_image_path
            else None
        )
        request = ThumbnailRequest(
            title=story.title[:300],
            story_summary=summary[: service_config().max_prompt_chars],
            aspect_ratio=payload.aspect,
            character=payload.character,
            character_image=reference,
        )
        image = await generate_thumbnail_image(request)
        # An image call is not metered (a /thumbnail job accounts it from its result): the short pays here.
        await self.jobs.record_short_usage(job, [(image.model, image.usage)])
        extension = "jpg" if "jpeg" in image.mime_type else "png"
        path = work / f"thumbnail.{extension}"
        await asyncio.to_thread(write_whole, path, image.image)
        return str(path), image.mime_type

    async def _copy(self, job: JobRecord, work: Path, story: Story) -> str:
        path = work / "copy.json"
        stored = await asyncio.to_thread(_read_model, path, PostCopy)
        if isinstance(stored, PostCopy):
            return stored.text()
        narration = [segment.narration for segment in story.segments]
        result = await self._paid(job, generate_post_copy(story.title, narration))
        await asyncio.to_thread(write_whole, path, result.value.model_dump_json(indent=1).encode())
        return result.value.text()

    async def _optional(self, step: Awaitable[T], what: str) -> T | None:
        """A thumbnail or the copy is a courtesy: the short is delivered without it rather than lost."""
        try:
            return await step
        except ReelwrightError as exc:
            log.warning("the short's %s failed: %s", what, exc)
            return None

    def _failure_message(self, job: JobRecord, errors: list[Exception]) -> str:
        what = "; ".join(
            error.user_message if isinstance(error, ReelwrightError) else "an unexpected error" for error in errors
        )
        return (
            f"This short could not be finished ({what}). Everything already made is kept: "
            f"/jobs retry {job.id[:8]} makes only what is missing."
        )


def remove_short_files(media_dir: Path, job_id: str) -> bool:
    """Delete a short's working files (after the retention period)."""
    path = short_dir(media_dir, job_id)
    if not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def short_estimate_usage(segments: int, narrated: bool, config: ServiceConfig) -> list[tuple[str, Usage]]:
    """What a short of ``segments`` segments uses at most, per model: the story, every clip at its
    longest, the narration, the thumbnail and the copy. Deliberately generous."""
    words_per_segment = 40
    entries = [
        (config.story_model, Usage(model_calls=1, prompt_tokens=1200, completion_tokens=150 * segments + 300)),
        (config.video_model, Usage(model_calls=segments, video_seconds=MAX_CLIP_SECONDS * segments)),
        (config.thumbnail_model, Usage(model_calls=1, images=1)),
        (config.content_model, Usage(model_calls=1, prompt_tokens=600 + 80 * segments, completion_tokens=400)),
    ]
    if narrated:
        # Gemini TTS bills about 32 audio tokens per second of speech; a segment speaks at most its 8 s.
        entries.append(
            (
                config.tts_model,
                Usage(
                    model_calls=segments,
                    prompt_tokens=(words_per_segment * 2) * segments,
                    completion_tokens=32 * (MAX_CLIP_SECONDS + 4) * segments,
                ),
            )
        )
    return entries
