"""The stitch, with real FFmpeg (PyAV) on real tiny clips, the output probed with the same library."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from bot.sandbox.media import CLIP_SIZES, encode_clip, tiny_mp4
from connectors.errors import UserInputError
from services.stitch import (
    AUDIO_BITRATE,
    DUCK_GAIN,
    JoinRequest,
    PieceRequest,
    Segment,
    StitchFailed,
    StitchRequest,
    StitchResult,
    configure_stitching,
    encode_piece,
    first_frame_jpeg,
    frame_size,
    join_in_this_process,
    join_pieces,
    piece_in_this_process,
    shutdown_stitches,
    stitch,
    stitch_in_this_process,
    stitch_pids,
    video_bitrate,
)

SECONDS = (2.0, 3.0, 2.0)
TEXTS = ("A dragon wakes up hungry.", "She flies over the sleeping town.", "And eats the moon.")
SMALL = {"long_side": 320, "fps": 8}


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    paths = []
    for number, seconds in enumerate(SECONDS):
        path = tmp_path / f"clip{number}.mp4"
        path.write_bytes(tiny_mp4(seconds, "9:16"))
        paths.append(path)
    return paths


def _segments(clips: list[Path], narration: Path | None = None) -> tuple[Segment, ...]:
    return tuple(
        Segment(clip, text, narration if number == 1 else None)
        for number, (clip, text) in enumerate(zip(clips, TEXTS, strict=True))
    )


def _probe(path: Path) -> tuple[list[str], tuple[int, int], list[float]]:
    """Stream kinds, the picture size, and each stream's length in seconds."""
    with av.open(str(path)) as container:
        kinds = [stream.type for stream in container.streams]
        video = container.streams.video[0]
        lengths = [
            float(stream.duration * stream.time_base)
            for stream in container.streams
            if stream.duration is not None and stream.time_base is not None
        ]
        return kinds, (video.codec_context.width, video.codec_context.height), lengths


def _frame_at(path: Path, seconds: float) -> np.ndarray:
    """The luma plane of the first picture shown at or after ``seconds``."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= seconds:
                return frame.to_ndarray(format="gray").astype(np.int16)
    raise AssertionError(f"no frame at {seconds} s")


def _sound(path: Path, start: float, end: float) -> np.ndarray:
    """The output's left channel between ``start`` and ``end`` seconds."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48_000)
        chunks = [
            frame.to_ndarray()[0] for decoded in container.decode(audio=0) for frame in resampler.resample(decoded)
        ]
    samples = np.concatenate(chunks)
    return samples[round(start * 48_000) : round(end * 48_000)]


def _level(samples: np.ndarray, hertz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    bins = np.fft.rfftfreq(samples.size, 1 / 48_000)
    return float(spectrum[np.argmin(np.abs(bins - hertz))])


def _srt_spans(text: str) -> list[tuple[float, float, str]]:
    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        secs, millis = rest.split(",")
        return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000

    cues = []
    for block in text.strip().split("\n\n"):
        number, timing, *words = block.split("\n")
        match = re.fullmatch(r"(\S+) --> (\S+)", timing)
        assert number.isdigit() and match is not None
        cues.append((seconds(match[1]), seconds(match[2]), " ".join(words)))
    return cues


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _box_order(path: Path) -> list[bytes]:
    data = path.read_bytes()
    offset, boxes = 0, []
    while offset < len(data):
        boxes.append(data[offset + 4 : offset + 8])
        offset += int.from_bytes(data[offset : offset + 4], "big")
    return boxes


@pytest.mark.parametrize("aspect", ["9:16", "16:9"])
async def test_stitch_concatenates_in_order_at_the_aspect_with_an_srt_per_segment(
    clips: list[Path], tmp_path: Path, aspect: str
) -> None:
    request = StitchRequest(_segments(clips), tmp_path / "short.mp4", aspect=aspect, **SMALL)  # type: ignore[arg-type]
    result = await stitch(request)

    assert not result.stream_copied and result.video == tmp_path / "short.mp4"
    kinds, size, lengths = _probe(result.video)
    assert kinds == ["video", "audio"]
    assert size == frame_size(aspect, 320)  # type: ignore[arg-type]
    assert (size[0] < size[1]) == (aspect == "9:16")
    assert all(abs(length - sum(SECONDS)) <= 0.1 for length in lengths) and len(lengths) == 2
    assert abs(result.duration - sum(SECONDS)) <= 0.1
    boxes = _box_order(result.video)
    assert boxes.index(b"moov") < boxes.index(b"mdat")

    cues = _srt_spans(result.srt.read_text(encoding="utf-8"))
    assert cues == [(0.0, 2.0, TEXTS[0]), (2.0, 5.0, TEXTS[1]), (5.0, 7.0, TEXTS[2])]
    assert [(cue.start, cue.end, cue.text) for cue in result.cues] == cues
    assert not [name for name in _names(tmp_path) if name.endswith(".partial")]


async def test_captions_are_burned_into_each_segments_frames(clips: list[Path], tmp_path: Path) -> None:
    with_captions = await stitch(StitchRequest(_segments(clips), tmp_path / "on.mp4", aspect="16:9", **SMALL))
    without = await stitch(
        StitchRequest(_segments(clips), tmp_path / "off.mp4", aspect="16:9", captions=False, **SMALL)
    )
    assert not without.stream_copied
    width, height = frame_size("16:9", 320)
    caption_rows = slice(round(height * 0.55), round(height * 0.92))
    top_rows = slice(0, round(height * 0.25))
    for middle in (1.0, 3.5, 6.0):
        on, off = _frame_at(with_captions.video, middle), _frame_at(without.video, middle)
        assert on.shape == off.shape == (height, width)
        assert np.abs(on[caption_rows] - off[caption_rows]).mean() > 2
        assert (on[caption_rows] > 200).sum() > 50
        assert np.abs(on[top_rows] - off[top_rows]).mean() < 1
    first, second = _frame_at(with_captions.video, 1.0), _frame_at(with_captions.video, 3.5)
    assert np.abs(first[caption_rows] - second[caption_rows]).mean() > 2


async def test_narration_is_mixed_over_the_clip_audio_which_is_ducked(clips: list[Path], tmp_path: Path) -> None:
    narration = tmp_path / "narration.wav"
    rate, seconds = 48_000, 2.5
    with av.open(str(narration), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        t = np.arange(round(rate * seconds), dtype=np.float32) / rate
        tone = (0.3 * np.sin(2 * np.pi * 880 * t) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    plain = await stitch(StitchRequest(_segments(clips), tmp_path / "plain.mp4", aspect="16:9", **SMALL))
    narrated = await stitch(StitchRequest(_segments(clips, narration), tmp_path / "voiced.mp4", **SMALL))
    assert not narrated.stream_copied

    spoken = (2.5, 4.0)
    tone_before = _level(_sound(plain.video, *spoken), 440)
    tone_ducked = _level(_sound(narrated.video, *spoken), 440)
    assert tone_ducked < tone_before * (DUCK_GAIN + 0.15)
    assert _level(_sound(narrated.video, *spoken), 880) > 2 * _level(_sound(plain.video, *spoken), 880)
    assert _level(_sound(narrated.video, 0.5, 1.5), 440) > 0.8 * _level(_sound(plain.video, 0.5, 1.5), 440)
    _, _, lengths = _probe(narrated.video)
    assert all(abs(length - sum(SECONDS)) <= 0.1 for length in lengths)


def test_bitrate_leaves_the_audio_and_a_margin_inside_the_budget() -> None:
    budget, seconds = 50 * 1024 * 1024, 48.0
    bitrate = video_bitrate(budget, seconds)
    assert (bitrate * (seconds + 1) + AUDIO_BITRATE * seconds) / 8 < budget
    assert video_bitrate(8 * 1024 * 1024, 48.0) < bitrate
    with pytest.raises(UserInputError, match="fewer segments"):
        video_bitrate(500_000, 48.0)


@pytest.fixture
def noisy(tmp_path: Path) -> tuple[Segment, ...]:
    """Two 3 s 360x640 clips of random pixels: far more bits than any small budget holds."""
    rng = np.random.default_rng(7)
    segments = []
    for number in range(2):
        path = tmp_path / f"noisy{number}.mp4"
        with av.open(str(path), "w", format="mp4") as out:
            video = out.add_stream("libx264", rate=12)
            video.width, video.height, video.pix_fmt = 360, 640, "yuv420p"
            video.options = {"preset": "ultrafast", "crf": "18"}
            audio = out.add_stream("aac", rate=48_000, layout="mono")
            for index in range(36):
                pixels = rng.integers(0, 256, (640, 360, 3), dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
                frame.pts = index
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            for start in range(0, 3 * 48_000, 1024):
                sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
                sound.sample_rate, sound.pts = 48_000, start
                out.mux(audio.encode(sound))
            out.mux(audio.encode(None))
        segments.append(Segment(path, f"part {number}"))
    return tuple(segments)


async def test_output_stays_under_the_byte_budget(noisy: tuple[Segment, ...], tmp_path: Path) -> None:
    budget = 700_000
    assert sum(segment.clip.stat().st_size for segment in noisy) > 2 * budget
    result = await stitch(StitchRequest(noisy, tmp_path / "fit.mp4", byte_budget=budget, long_side=640, fps=12))
    assert result.size == result.video.stat().st_size <= budget
    assert result.size > budget // 3
    assert result.video_bitrate is not None and result.video_bitrate <= video_bitrate(budget, 6.0)
    assert _probe(result.video)[1] == (360, 640)


async def test_a_budget_too_small_is_refused_and_leaves_no_file(clips: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot fit"):
        await stitch(StitchRequest(_segments(clips), tmp_path / "none.mp4", byte_budget=100_000, **SMALL))
    assert _names(tmp_path) == sorted(clip.name for clip in clips)


async def test_clips_that_match_are_stream_copied(clips: list[Path], tmp_path: Path) -> None:
    result = await stitch(StitchRequest(_segments(clips), tmp_path / "copy.mp4", captions=False, **SMALL))
    assert result.stream_copied and result.encodes == 0 and result.video_bitrate is None
    kinds, size, lengths = _probe(result.video)
    assert kinds == ["video", "audio"] and size == (160, 284)
    assert all(abs(length - sum(SECONDS)) <= 0.1 for length in lengths)
    with av.open(str(result.video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == sum(round(seconds * 4) for seconds in SECONDS)
    assert result.size < sum(clip.stat().st_size for clip in clips) + 4096
    assert _srt_spans(result.srt.read_text(encoding="utf-8"))[1] == (2.0, 5.0, TEXTS[1])
    boxes = _box_order(result.video)
    assert boxes.index(b"moov") < boxes.index(b"mdat")


async def test_stream_copied_clips_keep_their_sound_in_step_with_the_pictures(tmp_path: Path) -> None:
    clip = tmp_path / "one.mp4"
    clip.write_bytes(tiny_mp4(1.0, "9:16"))
    result = await stitch(StitchRequest(tuple(Segment(clip) for _ in range(8)), tmp_path / "copy.mp4", **SMALL))
    assert result.stream_copied and result.duration == 8.0
    with av.open(str(result.video)) as container:
        played = sum(frame.samples for frame in container.decode(audio=0)) / 24_000
    assert abs(played - 8.0) <= 512 / 24_000 + 1024 / 24_000


async def test_stream_copy_gives_way_to_an_encode_when_the_aspect_differs(clips: list[Path], tmp_path: Path) -> None:
    turned = await stitch(
        StitchRequest(_segments(clips), tmp_path / "turned.mp4", aspect="16:9", captions=False, **SMALL)
    )
    assert not turned.stream_copied and _probe(turned.video)[1] == frame_size("16:9", 320)


async def test_stream_copy_gives_way_to_an_encode_when_the_clips_exceed_the_budget(
    noisy: tuple[Segment, ...], tmp_path: Path
) -> None:
    request = StitchRequest(noisy, tmp_path / "copy.mp4", captions=False, long_side=640, fps=12)
    assert (await stitch(request)).stream_copied
    budget = 700_000
    squeezed = await stitch(
        StitchRequest(noisy, tmp_path / "squeezed.mp4", captions=False, byte_budget=budget, long_side=640, fps=12)
    )
    assert not squeezed.stream_copied and squeezed.size <= budget


async def test_an_unreadable_clip_fails_clearly_and_leaves_no_output(clips: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"<html>not a video</html>")
    segments = (*_segments(clips)[:2], Segment(broken, "oops"))
    with pytest.raises(StitchFailed, match=r"broken\.mp4"):
        await stitch(StitchRequest(segments, tmp_path / "out.mp4", **SMALL))
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.srt").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


async def _writing(task: asyncio.Task[Any], partial: Path) -> int:
    """The process of the one stitch ``task`` runs, once it is writing ``partial`` (and still alive)."""
    while not stitch_pids():
        assert not task.done()
        await asyncio.sleep(0.01)
    (pid,) = stitch_pids()
    while not await asyncio.to_thread(partial.exists):
        assert not task.done() and _alive(pid)
        await asyncio.sleep(0.01)
    return pid


async def test_cancelling_the_stitch_kills_its_process_and_removes_the_partial_file(tmp_path: Path) -> None:
    clip = tmp_path / "long.mp4"
    clip.write_bytes(tiny_mp4(8.0, "9:16"))
    segments = tuple(Segment(clip, f"segment {number}") for number in range(8))
    request = StitchRequest(segments, tmp_path / "big.mp4", long_side=1920, fps=30, preset="slow")
    task = asyncio.create_task(stitch(request))
    pid = await _writing(task, tmp_path / ".big.mp4.partial")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(pid) and stitch_pids() == []
    assert _names(tmp_path) == ["long.mp4"]


def test_the_stitch_runs_in_this_process_too(clips: list[Path], tmp_path: Path) -> None:
    result = stitch_in_this_process(StitchRequest(_segments(clips), tmp_path / "here.mp4", **SMALL))
    assert isinstance(result, StitchResult) and result.encodes == 1 and result.cpu_seconds > 0
    assert result.peak_rss_bytes > 0


# -- pieces and the join ----------------------------------------------------------------------------

PIECE = {"aspect": "9:16", "video_bitrate": 400_000, "long_side": 256, "fps": 8}


def _clip(folder: Path, seconds: float, aspect: str = "9:16") -> Path:
    path = folder / f"clip-{seconds:g}-{aspect.replace(':', 'x')}.mp4"
    path.write_bytes(tiny_mp4(seconds, aspect))
    return path


def _piece(folder: Path, seconds: float, name: str, *, text: str = "", **overrides: object) -> PieceRequest:
    settings = {**PIECE, "captions": True, **overrides}
    return PieceRequest(Segment(_clip(folder, seconds), text), folder / name, **settings)  # type: ignore[arg-type]


def _decoded_sound(path: Path) -> np.ndarray:
    """Every sample a player would play, one after the other (left channel)."""
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray()[0] for frame in container.decode(audio=0)])


def _video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_a_piece_has_exactly_its_frames_and_its_caption(tmp_path: Path) -> None:
    captioned = await encode_piece(_piece(tmp_path, 3.0, "on.mp4", text="  A dragon   wakes up. "))
    plain = await encode_piece(_piece(tmp_path, 3.0, "off.mp4", text="A dragon wakes up.", captions=False))

    assert (
        captioned.path == tmp_path / "on.mp4" and captioned.duration == 3.0 and captioned.text == "A dragon wakes up."
    )
    assert (
        captioned.size == captioned.path.stat().st_size and captioned.cpu_seconds > 0 and captioned.peak_rss_bytes > 0
    )
    kinds, size, lengths = _probe(captioned.path)
    assert kinds == ["video", "audio"] and size == frame_size("9:16", 256)
    assert lengths == [3.0, 3.0]
    assert _video_frames(captioned.path) == 3 * 8
    height = size[1]
    caption_rows = slice(round(height * 0.55), round(height * 0.80))
    top_rows = slice(0, round(height * 0.25))
    on, off = _frame_at(captioned.path, 1.0), _frame_at(plain.path, 1.0)
    assert (on[caption_rows] > 200).sum() > 30 and np.abs(on[caption_rows] - off[caption_rows]).mean() > 2
    assert np.abs(on[top_rows] - off[top_rows]).mean() < 1
    assert _names(tmp_path) == ["clip-3-9x16.mp4", "off.mp4", "on.mp4"]


def test_a_piece_holds_the_last_picture_when_the_frame_rate_asks_for_more(tmp_path: Path) -> None:
    piece = piece_in_this_process(_piece(tmp_path, 2.25, "odd.mp4", fps=6))
    assert piece.duration == 14 / 6 and _video_frames(piece.path) == 14
    assert all(abs(length - 14 / 6) < 1e-3 for length in _probe(piece.path)[2])


async def test_three_pieces_join_into_one_short_with_a_cue_per_piece(tmp_path: Path) -> None:
    seconds, texts = (4.0, 6.0, 8.0), ("First part.", "", "Third  part.")
    pieces = [
        await encode_piece(_piece(tmp_path, length, f"piece{number}.mp4", text=text))
        for number, (length, text) in enumerate(zip(seconds, texts, strict=True))
    ]
    request = JoinRequest((pieces[0], pieces[1].path, pieces[2]), texts, tmp_path / "out" / "short.mp4", 10_000_000)
    result = await join_pieces(request)

    assert result.video == tmp_path / "out" / "short.mp4" and result.stream_copied and result.encodes == 0
    assert result.size == result.video.stat().st_size <= sum(piece.size for piece in pieces) + 8192
    kinds, size, lengths = _probe(result.video)
    assert kinds == ["video", "audio"] and size == frame_size("9:16", 256)
    video_length, audio_length = lengths
    assert abs(video_length - 18.0) <= 0.1 and abs(result.duration - 18.0) <= 0.1
    assert abs(audio_length - video_length) <= 0.1
    assert abs(_decoded_sound(result.video).size / 48_000 - video_length) <= 0.1
    assert _video_frames(result.video) == 18 * 8
    boxes = _box_order(result.video)
    assert boxes.index(b"moov") < boxes.index(b"mdat")
    cues = [(0.0, 4.0, "First part."), (10.0, 18.0, "Third part.")]
    assert _srt_spans(result.srt.read_text(encoding="utf-8")) == cues
    assert [(cue.start, cue.end, cue.text) for cue in result.cues] == cues
    assert _names(tmp_path / "out") == ["short.mp4", "short.srt"]


def _noise_wav(path: Path, seconds: float, seed: int) -> Path:
    """Loud white noise: the narration ducks the clip's tone, and a stretch of it is found again exactly."""
    rng = np.random.default_rng(seed)
    noise = (rng.uniform(-0.3, 0.3, round(seconds * 48_000)) * 32767).astype(np.int16).reshape(1, -1)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(noise, format="s16", layout="mono")
        frame.sample_rate = 48_000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_the_sound_stays_in_step_with_the_pictures_over_eight_pieces(tmp_path: Path) -> None:
    seconds = (4.0, 6.0, 8.0, 4.0, 6.0, 8.0, 4.0, 6.0)
    pieces = []
    for number, length in enumerate(seconds):
        narration = _noise_wav(tmp_path / f"voice{number}.wav", length, number)
        segment = Segment(_clip(tmp_path, length), "", narration)
        pieces.append(
            piece_in_this_process(PieceRequest(segment, tmp_path / f"p{number}.mp4", captions=False, **PIECE))
        )  # type: ignore[arg-type]
    result = join_in_this_process(JoinRequest(tuple(pieces), ("",) * 8, tmp_path / "short.mp4", 10_000_000))

    played = _decoded_sound(result.video)
    window, reach = 4_800, 4_800
    start = 0.0
    for piece in pieces:
        own = _decoded_sound(piece.path)[12_000 : 12_000 + window]
        expected = round(start * 48_000) + 12_000
        around = played[expected - reach : expected + reach + window]
        lag = int(np.argmax(np.correlate(around, own, mode="valid"))) - reach
        assert abs(lag) <= 0.012 * 48_000, f"the piece at {start:g} s sounds {lag / 48:.1f} ms off its pictures"
        start += piece.duration
    assert abs(played.size / 48_000 - sum(seconds)) <= 0.012 + 1024 / 48_000
    assert result.srt.read_text(encoding="utf-8") == ""


async def test_pieces_made_with_different_settings_are_not_joined(tmp_path: Path) -> None:
    first = await encode_piece(_piece(tmp_path, 2.0, "a.mp4"))
    faster = await encode_piece(_piece(tmp_path, 2.0, "b.mp4", preset="ultrafast"))
    wider = await encode_piece(_piece(tmp_path, 2.0, "c.mp4", aspect="16:9"))
    output = tmp_path / "out" / "short.mp4"
    with pytest.raises(StitchFailed, match=r"part 2 \(b\.mp4\).*SPS/PPS"):
        await join_pieces(JoinRequest((first, faster), ("", ""), output, 10_000_000))
    with pytest.raises(StitchFailed, match=r"part 2 \(c\.mp4\).*picture size"):
        await join_pieces(JoinRequest((first, wider), ("", ""), output, 10_000_000))
    with pytest.raises(StitchFailed, match=r"missing\.mp4"):
        await join_pieces(JoinRequest((first, tmp_path / "missing.mp4"), ("", ""), output, 10_000_000))
    assert _names(output.parent) == []


async def test_a_join_over_the_budget_fails_and_leaves_nothing(tmp_path: Path) -> None:
    pieces = tuple([await encode_piece(_piece(tmp_path, 2.0, f"p{number}.mp4", text="x")) for number in range(2)])
    fits = await join_pieces(JoinRequest(pieces, ("a", "b"), tmp_path / "out" / "fits.mp4", 10_000_000))
    with pytest.raises(StitchFailed, match="over the"):
        await join_pieces(JoinRequest(pieces, ("a", "b"), tmp_path / "out" / "short.mp4", fits.size - 1))
    assert _names(tmp_path / "out") == ["fits.mp4", "fits.srt"]
    exact = await join_pieces(JoinRequest(pieces, ("a", "b"), tmp_path / "out" / "short.mp4", fits.size))
    assert exact.size == fits.size


async def test_cancelling_a_piece_kills_its_process_and_removes_the_partial_file(tmp_path: Path) -> None:
    clip = _clip(tmp_path, 8.0)
    request = PieceRequest(
        Segment(clip, "a long caption"),
        tmp_path / "big.mp4",
        "9:16",
        True,
        4_000_000,
        long_side=1920,
        fps=30,
        preset="slow",
    )
    task = asyncio.create_task(encode_piece(request))
    pid = await _writing(task, tmp_path / ".big.mp4.partial")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(pid) and stitch_pids() == []
    assert _names(tmp_path) == [clip.name]


async def test_shutdown_kills_a_running_piece(tmp_path: Path) -> None:
    clip = _clip(tmp_path, 8.0)
    request = PieceRequest(
        Segment(clip, "words"), tmp_path / "big.mp4", "9:16", True, 4_000_000, long_side=1920, fps=30
    )
    task = asyncio.create_task(encode_piece(request))
    pid = await _writing(task, tmp_path / ".big.mp4.partial")
    shutdown_stitches()
    with pytest.raises(StitchFailed, match="ended with code"):
        await task
    assert not _alive(pid) and stitch_pids() == []
    assert _names(tmp_path) == [clip.name]


@pytest.fixture
def one_at_a_time() -> Iterator[None]:
    configure_stitching(1)
    yield
    configure_stitching(2)


@pytest.mark.usefixtures("one_at_a_time")
async def test_no_more_stitch_processes_run_at_once_than_configured(tmp_path: Path) -> None:
    requests = [_piece(tmp_path, 8.0, f"p{number}.mp4", text="words", long_side=640, fps=24) for number in range(2)]
    tasks = [asyncio.create_task(encode_piece(request)) for request in requests]
    seen: set[int] = set()
    while not all(task.done() for task in tasks):
        running = stitch_pids()
        assert len(running) <= 1
        seen.update(running)
        await asyncio.sleep(0.005)
    assert len(seen) == 2 and all(task.result().duration == 8.0 for task in tasks)


def test_configure_stitching_refuses_zero() -> None:
    with pytest.raises(ValueError):
        configure_stitching(0)


def _jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    image.load()
    return image


@pytest.mark.parametrize("aspect", ["9:16", "16:9"])
def test_first_frame_jpeg_is_the_clips_first_picture_small_and_upright(tmp_path: Path, aspect: str) -> None:
    clip = _clip(tmp_path, 1.0, aspect)
    image = _jpeg(first_frame_jpeg(clip))
    assert image.size == CLIP_SIZES[aspect]
    assert np.abs(np.asarray(image.convert("RGB"))[2, 2].astype(int) - (40, 90, 160)).max() < 20
    small = _jpeg(first_frame_jpeg(clip, max_side=64))
    assert max(small.size) == 64 and (small.width < small.height) == (aspect == "9:16")


def test_first_frame_jpeg_applies_the_clips_rotation(tmp_path: Path) -> None:
    path = tmp_path / "turned.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=4)
        video.width, video.height, video.pix_fmt = 128, 64, "yuv420p"
        video.set_display_rotation(90)
        picture = np.zeros((64, 128, 3), dtype=np.uint8)
        picture[:, :64] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = 0
        out.mux(video.encode(frame))
        out.mux(video.encode(None))
    image = np.asarray(_jpeg(first_frame_jpeg(path)).convert("L"))
    assert image.shape == (128, 64)
    assert image[96:, :].mean() > 200 and image[:32, :].mean() < 50


def test_first_frame_jpeg_of_an_unreadable_clip_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"<html>not a video</html>")
    with pytest.raises(StitchFailed, match=r"broken\.mp4"):
        first_frame_jpeg(broken)


def test_a_narrated_segment_shorter_than_the_ducking_ramp_is_encoded(tmp_path: Path) -> None:
    clip = tmp_path / "blink.mp4"
    clip.write_bytes(encode_clip(0.04, (144, 256), 25, (40, 90, 160)))
    narration = _noise_wav(tmp_path / "voice.wav", 0.5, 1)
    request = PieceRequest(
        Segment(clip, "Blink.", narration), tmp_path / "p.mp4", captions=True, **{**PIECE, "fps": 24}
    )  # type: ignore[arg-type]
    piece = piece_in_this_process(request)
    assert piece.duration == 1 / 24 and _video_frames(piece.path) == 1
