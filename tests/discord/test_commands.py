"""Every command end to end: the real discord.py client, the fake Discord and the AI fakes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.core.commands import OptionKind
from bot.discord.messages import EMBED_FIELDS_LIMIT, EMBED_TOTAL_LIMIT, FIELD_VALUE_LIMIT
from tests.bot.helpers import png_bytes
from tests.discord.conftest import DiscordBot
from tests.fakes import Fault
from tests.fakes.discord_api import DiscordCall, FakeDiscord

MESSAGE_ROUTES = ("edit_original", "followup", "channel_message")


def calls_for(fake: FakeDiscord, d: dict[str, Any]) -> list[DiscordCall]:
    return [call for call in fake.calls if d["token"] in call.path or d["id"] in call.path]


def assert_pings_nobody(fake: FakeDiscord) -> None:
    sent = [call for call in fake.calls if call.route in MESSAGE_ROUTES]
    assert sent
    for call in sent:
        assert call.payload["allowed_mentions"] == {"parse": []}, call


def embed_size(embed: dict[str, Any]) -> int:
    fields = embed.get("fields", [])
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + sum(len(f["name"]) + len(f["value"]) for f in fields)
        + len((embed.get("footer") or {}).get("text", ""))
    )


async def test_story_is_deferred_then_progress_then_one_embed_answer_with_storyboard_and_buttons(
    bot: DiscordBot,
) -> None:
    d = await bot.fake.slash("story", {"idea": "a dragon learns to fly", "segments": 3})
    final = await bot.final(d)
    calls = calls_for(bot.fake, d)
    assert [c.route for c in calls] == ["callback", "edit_original", "edit_original"]
    assert calls[0].payload == {"type": 5}
    assert calls[0].query == {"with_response": "1"}
    assert calls[1].payload["content"].startswith("✍️")
    embed = final.payload["embeds"][0]
    assert embed["title"].startswith("Sandbox title")
    assert len(embed["fields"]) == 3
    assert embed["image"]["url"] == "attachment://storyboard.jpg"
    assert final.payload["content"] is None  # the progress line is replaced
    assert [f.filename for f in final.files] == ["storyboard.jpg"]
    assert final.files[0].data.startswith(b"\xff\xd8\xff")  # the storyboard is a JPEG
    labels = [b["label"] for row in final.payload["components"] for b in row["components"]]
    assert labels == ["Video of segment 1", "Video of segment 2", "Video of segment 3", "Thumbnail", "Regenerate"]
    assert_pings_nobody(bot.fake)


async def test_a_storyboard_that_cannot_be_drawn_costs_nothing_but_the_image(
    bot: DiscordBot, storyboards_fail: None, caplog: pytest.LogCaptureFixture
) -> None:
    d = await bot.fake.slash("story", {"idea": "a dragon learns to fly", "segments": 3})
    final = await bot.final(d)
    embed = final.payload["embeds"][0]
    assert embed["title"].startswith("Sandbox title") and len(embed["fields"]) == 3
    assert "image" not in embed and final.files == []
    assert "could not draw the storyboard" in caplog.text


async def test_deferral_reaches_discord_before_the_ai_is_called(bot: DiscordBot) -> None:
    d = await bot.fake.slash("meme", {"topic": "mondays"})
    await bot.final(d)
    deferred = calls_for(bot.fake, d)[0]
    assert deferred.route == "callback"
    assert bot.openrouter.requests
    assert deferred.time <= min(r.time for r in bot.openrouter.requests)


@pytest.mark.parametrize(
    ("command", "options", "expect"),
    [
        ("meme", {"topic": "mondays at a startup", "count": 2, "tone": "dry"}, "😂"),
        ("write", {"brief": "a vegan ramen recipe", "kind": "hashtags"}, "✍️ Hashtags"),
        ("trends", {"niche": "indie game dev", "count": 3}, "📈"),
        ("help", {}, "/story"),
        ("help", {"command": "video"}, "/video"),
    ],
)
async def test_text_commands_answer_once_in_the_original_response(
    bot: DiscordBot, command: str, options: dict[str, Any], expect: str
) -> None:
    d = await bot.fake.slash(command, options)
    final = await bot.final(d)
    assert expect in final.payload["content"]
    assert not final.payload.get("components")
    assert next(c.route for c in calls_for(bot.fake, d)) == "callback"
    assert_pings_nobody(bot.fake)


async def test_storysets_are_embeds_one_per_take(bot: DiscordBot) -> None:
    d = await bot.fake.slash("storysets", {"idea": "a cat opens a bakery", "sets": 3, "segments": 2})
    final = await bot.final(d)
    embeds = final.payload["embeds"]
    assert [e["title"][:7] for e in embeds] == ["Take 1:", "Take 2:", "Take 3:"]
    assert sum(embed_size(e) for e in embeds) <= EMBED_TOTAL_LIMIT


async def test_a_long_story_keeps_embed_limits_and_attaches_the_whole_story(bot: DiscordBot) -> None:
    d = await bot.fake.slash("longstory", {"idea": "a heist on the moon", "segments": 40})
    final = await bot.final(d)
    embed = final.payload["embeds"][0]
    assert len(embed["fields"]) <= EMBED_FIELDS_LIMIT
    assert all(len(f["value"]) <= FIELD_VALUE_LIMIT for f in embed["fields"])
    assert embed_size(embed) <= EMBED_TOTAL_LIMIT
    names = [f.filename for f in final.files]
    assert names == ["storyboard.jpg", "story.json"]
    story = json.loads(final.files[1].data)
    assert len(story["segments"]) == 40


@pytest.mark.usefixtures("sqlite_database")  # the character book
async def test_character_reads_the_attachment_from_the_cdn(bot: DiscordBot) -> None:
    image = bot.fake.add_attachment("hero.png", png_bytes())
    d = await bot.fake.slash("character", {"name": "Captain"}, attachments={"image": image})
    final = await bot.final(d)
    assert "Captain" in final.payload["content"]
    assert [c.route for c in bot.fake.calls if c.route == "cdn"] == []  # CDN reads are not REST calls
    vision = bot.openrouter.requests[-1].json["messages"][-1]["content"]
    assert any(part.get("type") == "image_url" for part in vision)


async def test_an_attachment_over_the_size_limit_is_refused_before_download_and_any_ai_call(
    bot: DiscordBot,
) -> None:
    limit = bot.runtime.settings.max_image_bytes
    image = bot.fake.add_attachment("huge.png", b"\x89PNG" + b"\0" * limit)
    d = await bot.fake.slash("character", {}, attachments={"image": image})
    final = await bot.final(d)
    assert "limit" in final.payload["content"]
    assert final.payload["content"].startswith("⚠️")
    assert bot.openrouter.requests == []
    assert not [r for r in bot.fake.requests if r.route == "cdn"]


async def test_an_attachment_declared_over_the_cap_is_never_fetched(bot: DiscordBot) -> None:
    image = bot.fake.add_attachment("huge.png", png_bytes(), size=200 * 1024 * 1024)
    d = await bot.fake.slash("video", {"prompt": "a cat surfing"}, attachments={"image": image})
    final = await bot.final(d)
    assert final.payload["content"] == "⚠️ The image is 200.0 MB; the limit is 10 MB."
    assert bot.fake.cdn_bytes_served == 0 and not [r for r in bot.fake.requests if r.route == "cdn"]
    assert bot.genai.requests == []


async def test_video_from_a_prompt_and_an_image_is_posted_as_a_file(bot: DiscordBot) -> None:
    image = bot.fake.add_attachment("frame.png", png_bytes())
    d = await bot.fake.slash(
        "video", {"prompt": "a cat surfing", "duration": "4", "aspect": "16:9"}, attachments={"image": image}
    )
    final = await bot.final(d)
    assert [f.filename.endswith(".mp4") for f in final.files] == [True]
    assert "4 s · 16:9" in final.payload["content"]
    started = bot.genai.video_generation_requests[0].json
    assert "a cat surfing" in json.dumps(started)
    assert [r for r in bot.fake.requests if r.route == "cdn"]


async def test_a_video_over_the_upload_limit_becomes_a_clear_message(bot: DiscordBot) -> None:
    d = await bot.fake.slash("video", {"prompt": "a cat surfing"}, attachment_size_limit=64)
    final = await bot.final(d)
    assert final.files == []
    assert "over this channel's upload limit" in final.payload["content"]


async def test_thumbnail_is_an_image(bot: DiscordBot) -> None:
    d = await bot.fake.slash("thumbnail", {"title": "I survived 24 hours in a library", "aspect": "1:1"})
    final = await bot.final(d)
    assert final.files and final.files[0].filename.endswith((".png", ".jpg"))
    assert final.payload["content"].startswith("🖼️ I survived")


async def test_model_output_with_everyone_pings_nobody(bot: DiscordBot) -> None:
    bot.openrouter.inject(Fault.content(json.dumps({"content": "@everyone @here <@&123> <@456> buy now"})))
    d = await bot.fake.slash("write", {"brief": "a launch post"})
    final = await bot.final(d)
    assert "@everyone" in final.payload["content"]
    assert_pings_nobody(bot.fake)


async def test_a_core_validation_error_is_one_clear_answer(bot: DiscordBot) -> None:
    d = await bot.fake.slash("video", {})
    final = await bot.final(d)
    assert final.payload["content"].startswith("⚠️ Describe the video")
    assert bot.genai.requests == []


async def test_every_catalogue_command_gets_exactly_one_final_answer(bot: DiscordBot) -> None:
    """New commands in the catalogue are served with no adapter change: each answers exactly once."""
    for command in bot.runtime.core.commands:
        options: dict[str, Any] = {}
        attachments: dict[str, dict[str, Any]] = {}
        for option in command.options:
            if option.required and option.kind is OptionKind.IMAGE:
                attachments[option.name] = bot.fake.add_attachment("hero.png", png_bytes())
            elif option.required:
                options[option.name] = "a lighthouse keeper"
        d = await bot.fake.slash(command.name, options, attachments=attachments)
        await bot.final(d)
        answers = [c for c in calls_for(bot.fake, d) if c.route == "edit_original" and "embeds" in c.payload]
        assert len(answers) == 1, command.name
        assert calls_for(bot.fake, d)[0].payload == {"type": 5}


async def test_a_failing_upstream_is_one_clear_answer_and_the_bot_keeps_serving(bot: DiscordBot) -> None:
    bot.openrouter.inject(Fault.status(500, "boom"))
    d = await bot.fake.slash("meme", {"topic": "mondays"})
    final = await bot.final(d)
    assert final.payload["content"].startswith("⚠️")
    d2 = await bot.fake.slash("meme", {"topic": "tuesdays"})
    assert (await bot.final(d2)).payload["content"].startswith("😂")


async def test_an_expired_token_while_answering_falls_back_to_the_channel(bot: DiscordBot) -> None:
    bot.fake.inject(Fault.status(401, body={"message": "Invalid Webhook Token", "code": 50027}), route="edit_original")
    d = await bot.fake.slash("meme", {"topic": "mondays"})
    posted = await bot.fake.wait_for(lambda c: c.route == "channel_message")
    assert posted.payload["content"].startswith("😂")
    assert posted.payload["allowed_mentions"] == {"parse": []}
    assert len([c for c in calls_for(bot.fake, d) if c.route == "edit_original"]) == 1
