"""How results read in chat: plain text blocks, one block per segment or idea, so adapters can
split long answers between blocks and never inside one."""

from __future__ import annotations

import json
from decimal import Decimal

from services.characters import CharacterAnalysis
from services.free_content import FreeContent
from services.meme import MemeScript
from services.shorts import ShortProgress
from services.story import Story, StorySets
from services.trends import TrendReport
from services.video import VideoProgress


def plural(count: int, noun: str) -> str:
    """``1 segment``, ``2 segments``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _note(note: str | None) -> str:
    """A service's word about a result that differs from what was asked, on its own line."""
    return f"\nℹ️ {note}" if note else ""


def story_blocks(story: Story, heading: str = "🎬") -> list[str]:
    count = plural(len(story.segments), "segment")
    blocks = [f"{heading} {story.title}\n{count} · {story.total_seconds} s{_note(story.note)}"]
    for segment in story.segments:
        blocks.append(
            f"{segment.number}. [{segment.duration_seconds} s] {segment.narration}\n   🎥 {segment.visual_prompt}"
        )
    return blocks


def story_sets_blocks(sets: StorySets) -> list[str]:
    blocks = [f"🎬 {plural(len(sets.sets), 'take')} on: {sets.idea}"]
    for number, story in enumerate(sets.sets, start=1):
        blocks.extend(story_blocks(story, heading=f"Take {number}:"))
    return blocks


def meme_blocks(meme: MemeScript) -> list[str]:
    blocks = [f"😂 {meme.title}{_note(meme.note)}"]
    for number, seg in enumerate(meme.segments, start=1):
        blocks.append(f"{number}. {seg.setup}\n   → {seg.punchline}\n   🅰️ {seg.caption}\n   🎥 {seg.visual_prompt}")
    return blocks


def free_content_blocks(content: FreeContent) -> list[str]:
    return [f"✍️ {content.kind.capitalize()}", content.content]


def trend_blocks(report: TrendReport) -> list[str]:
    blocks = [f"📈 Trending ideas: {report.niche}{_note(report.note)}"]
    for number, idea in enumerate(report.ideas, start=1):
        blocks.append(
            f"{number}. {idea.title}\n   Hook: {idea.hook}\n   Angle: {idea.angle}\n   Why now: {idea.why_now}"
        )
    return blocks


def character_blocks(analysis: CharacterAnalysis) -> list[str]:
    profile = analysis.profile
    return [
        f"🧑‍🎨 {profile.name}: {profile.summary}",
        f"Appearance: {profile.appearance}\nPersonality: {profile.personality}\nStyle: {profile.art_style}",
        f"Visual description (reused in later prompts):\n{profile.visual_description}",
        f"Use it with character={profile.name} in /story, /video and /thumbnail.",
    ]


def story_document(story: Story) -> bytes:
    """The whole story as JSON, for platforms where it does not fit in messages."""
    return json.dumps(story.model_dump(exclude={"usage"}), ensure_ascii=False, indent=2).encode()


def video_progress_text(progress: VideoProgress) -> str:
    """The status line for each stage of a Veo video."""
    return {
        "submitted": "🎬 The video is queued at the studio…",
        "rendering": f"🎞️ Rendering… {progress.elapsed_seconds:.0f} s so far (videos take 1-3 minutes)",
        "downloading": "📥 Fetching the finished video…",
        "done": "✅ Video ready",
    }[progress.stage]


def short_progress_text(progress: ShortProgress) -> str:
    """The one status line of a short, from the story to the stitch (delivery says "uploading")."""
    if progress.stage == "writing":
        return "✍️ Writing the story…"
    if progress.stage == "story":
        return f"🗂️ Story ready: {plural(progress.total, 'segment')}. Sending the clips to the studio…"
    if progress.stage == "clips":
        return f"🎞️ Clips {progress.done}/{progress.total} rendered (clips take 1-3 minutes, all at once)"
    if progress.stage == "narrating":
        return "🎙️ Narrating…"
    if progress.stage == "stitching":
        return "✂️ Stitching the clips, narration and captions…"
    return "✅ Short ready"


def money_text(value: Decimal) -> str:
    """Dollars as people read them: cents, and "under $0.01" for the fractions a text call costs."""
    if 0 < value < Decimal("0.01"):
        return "under $0.01"
    return f"${value:.2f}"
