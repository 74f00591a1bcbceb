"""The chat core's delivery plan and status line: what both platforms send, decided in one place."""

from __future__ import annotations

import asyncio

from bot.core.delivery import (
    MB,
    WHOLE_ANSWER_FILENAME,
    WHOLE_STORY_FILENAME,
    PlatformLimits,
    plan_delivery,
    too_large_notice,
)
from bot.core.progress import ProgressPolicy, StatusLine
from bot.core.replies import Media, Reply
from services.story import Story, StorySegment

SENDS_EVERYTHING = PlatformLimits(text_chars=300, upload_bytes=MB, upload_scope="Telegram's", captions=True)
SHOWS_THE_START = PlatformLimits(
    text_chars=300, upload_bytes=MB, upload_scope="this channel's", file_after_messages=3, messages_beside_file=1
)


def story(segments: int = 2) -> Story:
    return Story(
        title="Dragon",
        idea="a dragon learns to fly",
        segments=[
            StorySegment(number=n, duration_seconds=4, narration=f"Line {n}.", visual_prompt=f"Shot {n}")
            for n in range(1, segments + 1)
        ],
    )


def test_a_long_answer_is_sent_whole_and_also_as_a_file_where_every_message_goes() -> None:
    blocks = [f"{n} " + "x" * 250 for n in range(3)]
    plan = plan_delivery(Reply(blocks=blocks, footer="footer"), SENDS_EVERYTHING)
    assert len(plan.texts) == 3 and all(len(text) <= 300 for text in plan.texts)
    assert plan.texts[-1].endswith("footer")
    assert [media.filename for media in plan.files] == [WHOLE_ANSWER_FILENAME]
    assert plan.files[0].data.decode() == Reply(blocks=blocks, footer="footer").text


def test_a_very_long_answer_shows_its_start_and_says_where_the_rest_is() -> None:
    plan = plan_delivery(Reply(blocks=[f"{n} " + "x" * 250 for n in range(5)]), SHOWS_THE_START)
    assert len(plan.texts) == 1
    assert plan.texts[0].endswith(f"The whole answer is attached as {WHOLE_ANSWER_FILENAME}.")
    assert [media.filename for media in plan.files] == [WHOLE_ANSWER_FILENAME]


def test_an_answer_that_fits_its_messages_gets_no_file() -> None:
    plan = plan_delivery(Reply(blocks=["a" * 290, "b" * 290, "c" * 290]), SHOWS_THE_START)
    assert len(plan.texts) == 3 and plan.files == []


def test_errors_and_answers_with_a_document_get_no_extra_file() -> None:
    long_blocks = [f"{n} " + "x" * 250 for n in range(3)]
    assert plan_delivery(Reply(blocks=long_blocks, is_error=True), SENDS_EVERYTHING).files == []
    document = Media("document", b"{}", "story.json")
    with_document = plan_delivery(Reply(blocks=long_blocks, media=[document]), SENDS_EVERYTHING)
    assert with_document.files == [document]


def test_a_file_over_the_upload_limit_becomes_a_notice_under_the_text() -> None:
    video = Media("video", b"\0" * (MB + 1), "v.mp4", "🎬 8 s", "video/mp4")
    image = Media("image", b"small", "t.png", "🖼️", "image/png")
    plan = plan_delivery(Reply(blocks=["Here it is"], media=[video, image]), SHOWS_THE_START)
    assert plan.files == [image]
    assert plan.texts == [f"Here it is\n\n{too_large_notice(video, SHOWS_THE_START)}"]
    assert "over this channel's upload limit of 1.0 MB" in plan.texts[0]


def test_captions_are_not_repeated_as_text_where_files_carry_them() -> None:
    video = Media("video", b"clip", "v.mp4", "🎬 8 s", "video/mp4")
    assert plan_delivery(Reply(blocks=["🎬 8 s"], media=[video]), SENDS_EVERYTHING).texts == []
    assert plan_delivery(Reply(blocks=["🎬 8 s"], media=[video]), SHOWS_THE_START).texts == ["🎬 8 s"]


def test_a_story_cut_by_the_platform_layout_travels_whole_as_json() -> None:
    reply = Reply(blocks=["unused"], result=story(), footer="🧪 sandbox")
    plan = plan_delivery(reply, SHOWS_THE_START, text_layout=False, cut=True)
    assert [media.filename for media in plan.files] == [WHOLE_STORY_FILENAME]
    assert plan.texts == ["Not all of the story fits here; the whole story is attached as story.json.\n🧪 sandbox"]
    assert plan.storyboard is reply.result
    assert plan_delivery(reply, SHOWS_THE_START, text_layout=False).files == []


def test_an_error_carries_no_storyboard() -> None:
    assert plan_delivery(Reply(blocks=["⚠️"], result=story(), is_error=True), SENDS_EVERYTHING).storyboard is None


async def test_the_status_line_waits_for_its_delay_then_shows_the_latest_line() -> None:
    shown: list[str] = []

    async def show(text: str) -> None:
        shown.append(text)

    line = StatusLine(ProgressPolicy(status_delay=3600.0, edit_interval=0.0), show)
    await line.update("first")
    await line.update("second")
    assert shown == []  # a fast answer costs no status call
    await line.finish()
    await line.update("after the answer")
    assert shown == []


async def test_the_status_line_throttles_edits_and_never_repeats_a_line() -> None:
    shown: list[str] = []

    async def show(text: str) -> None:
        shown.append(text)

    line = StatusLine(ProgressPolicy(status_delay=0.0, edit_interval=3600.0), show)
    await line.update("first")
    await line.update("second")  # within the edit interval: waits, and is then replaced
    await line.update("third")
    assert shown == ["first"]
    await line.finish()
    assert shown == ["first"]

    eager = StatusLine(ProgressPolicy(status_delay=0.0, edit_interval=0.0), show)
    await eager.update("same")
    await eager.update("same")
    assert shown == ["first", "same"]


async def test_a_failing_status_update_is_logged_not_raised() -> None:
    async def broken(text: str) -> None:
        raise RuntimeError("the platform is down")

    line = StatusLine(ProgressPolicy(status_delay=0.0, edit_interval=0.0), broken)
    await line.update("working")  # no exception: a status line never costs the answer
    await line.finish()


async def test_finish_waits_for_a_status_update_in_flight() -> None:
    release = asyncio.Event()
    events: list[str] = []

    async def slow(text: str) -> None:
        events.append("sending")
        await release.wait()
        events.append("sent")

    line = StatusLine(ProgressPolicy(status_delay=0.0, edit_interval=0.0), slow)
    update = asyncio.create_task(line.update("working"))
    await asyncio.sleep(0)
    assert events == ["sending"]
    finished = asyncio.create_task(line.finish())
    await asyncio.sleep(0)
    assert not finished.done()
    release.set()
    await asyncio.gather(update, finished)
    assert events == ["sending", "sent"]
