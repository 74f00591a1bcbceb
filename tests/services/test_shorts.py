"""The plain parts of /short: checks before money moves, the copy's hashtags, the estimate."""

from __future__ import annotations

import pytest

from connectors.errors import UserInputError
from services.config import ServiceConfig
from services.free_content import MAX_HASHTAGS, PostCopy, hashtags
from services.shorts import check_short_request, narration_voice, short_estimate_usage


def test_hashtags_are_single_linkable_words_without_repeats() -> None:
    assert hashtags(["#cat", "cat", "Bakery Life", "#", "new-york", "día_de_pan"]) == [
        "#cat",
        "#BakeryLife",
        "#newyork",
        "#día_de_pan",
    ]
    assert len(hashtags([f"tag{i}" for i in range(40)])) == MAX_HASHTAGS


def test_the_copy_reads_title_description_then_tags() -> None:
    copy = PostCopy(title="A cat bakes", description="Flour everywhere.", hashtags=["cats", "#baking"])
    assert copy.text() == "A cat bakes\n\nFlour everywhere.\n\n#cats #baking"


def test_voice_none_means_no_narration_and_bad_names_are_refused() -> None:
    assert narration_voice("none") is None
    assert narration_voice("NONE ") is None
    assert narration_voice("Puck") == "Puck"
    assert narration_voice(None) == "Kore"
    with pytest.raises(UserInputError, match="voice"):
        narration_voice("K0re!")


def test_a_short_that_cannot_fit_the_upload_limit_is_refused_before_money() -> None:
    assert check_short_request("  a storm  ", 3, 50 * 1024 * 1024) == "a storm"
    with pytest.raises(UserInputError, match="fewer segments"):
        check_short_request("a storm", 8, 300_000)
    with pytest.raises(UserInputError, match="segments"):
        check_short_request("a storm", 9, 50 * 1024 * 1024)
    with pytest.raises(UserInputError, match="idea"):
        check_short_request("   ", 3, 50 * 1024 * 1024)


def test_the_estimate_pays_every_clip_at_its_longest_and_narration_only_with_a_voice() -> None:
    config = ServiceConfig()
    narrated = dict(short_estimate_usage(6, True, config))
    silent = dict(short_estimate_usage(6, False, config))
    assert narrated[config.video_model].video_seconds == 48
    assert config.tts_model in narrated and config.tts_model not in silent
    assert narrated[config.thumbnail_model].images == 1
