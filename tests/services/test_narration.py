"""Narration (Gemini text-to-speech) through the real google-genai SDK against the loopback fake."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from bot.sandbox.media import SPEECH_HZ, TONE_HZ, tiny_mp4
from connectors import genai_connector
from connectors.errors import RateLimited, UpstreamUnavailable, UserInputError
from services.config import ServiceConfig, configure_services
from services.metering import Meter, current_meter
from services.narration import MAX_SPEEDUP, TAIL_SECONDS, fit_to, narrate, pcm_to_wav
from services.pricing import PriceTable
from services.stitch import Segment, StitchRequest, stitch
from tests.conftest import TEST_SERVICE_CONFIG, genai_config
from tests.fakes import FakeGenAI, Fault
from tests.services.test_stitch import SMALL, _level, _sound

TTS_MODEL = ServiceConfig().tts_model


@pytest.fixture(params=["developer", "enterprise"])
async def speech_fake(request: pytest.FixtureRequest, fake_genai: FakeGenAI) -> AsyncIterator[FakeGenAI]:
    enterprise = request.param == "enterprise"
    genai_connector.configure_genai(genai_config(fake_genai, enterprise=enterprise))
    configure_services(replace(TEST_SERVICE_CONFIG, genai_enterprise=enterprise))
    yield fake_genai
    await genai_connector.close_genai_client()
    configure_services(ServiceConfig())


def decode(wav_bytes: bytes) -> tuple[int, int, int, int]:
    """Channels, sample width, rate and frame count, as the stdlib reads the file."""
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()


async def test_narration_is_a_mono_wav_at_the_models_rate(speech_fake: FakeGenAI) -> None:
    narration = await narrate("A ginger cat sets sail at dawn.")
    channels, width, rate, frames = decode(narration.wav)
    assert (channels, width, rate) == (1, 2, 24_000)
    assert frames > 0
    assert narration.sample_rate == 24_000
    assert narration.duration_seconds == frames / rate
    assert narration.voice == "Kore" and narration.model == TTS_MODEL
    [request] = speech_fake.requests
    assert f"models/{TTS_MODEL}:generateContent" in request.path
    assert request.json["generationConfig"]["responseModalities"] == ["AUDIO"]


async def test_longer_text_narrates_longer(speech_fake: FakeGenAI) -> None:
    short = await narrate("Hello.")
    long = await narrate("Hello, and welcome aboard the good ship Whiskers, bound for the far seas.")
    assert 0 < short.duration_seconds < long.duration_seconds


async def test_the_voice_is_sent_and_defaults_to_the_setting(speech_fake: FakeGenAI) -> None:
    await narrate("one", voice="Puck")
    await narrate("two")
    sent = [str(r.json["generationConfig"]["speechConfig"]) for r in speech_fake.requests]
    assert "Puck" in sent[0] and "Kore" in sent[1]


@pytest.mark.parametrize("text", ["", "   \n\t ", "\u200b\u200b"])
async def test_empty_text_is_refused_before_any_call(speech_fake: FakeGenAI, text: str) -> None:
    with pytest.raises(UserInputError, match="narration"):
        await narrate(text)
    assert speech_fake.requests == []


@pytest.mark.parametrize("voice", ["Ko re", "Kore;drop", "x" * 41])
async def test_a_malformed_voice_is_refused_before_any_call(speech_fake: FakeGenAI, voice: str) -> None:
    with pytest.raises(UserInputError, match="voice"):
        await narrate("hello", voice=voice)
    assert speech_fake.requests == []


@pytest.mark.parametrize(("code", "error"), [(429, RateLimited), (500, UpstreamUnavailable)])
async def test_upstream_errors_are_translated(speech_fake: FakeGenAI, code: int, error: type[Exception]) -> None:
    speech_fake.inject(Fault.status(code), route="generateContent")
    meter = Meter()
    token = current_meter.set(meter)
    try:
        with pytest.raises(error):
            await narrate("hello")
    finally:
        current_meter.reset(token)
    assert meter.entries == []


async def test_usage_is_metered_and_priced(speech_fake: FakeGenAI) -> None:
    meter = Meter()
    token = current_meter.set(meter)
    try:
        narration = await narrate("The storm breaks over the harbour.")
    finally:
        current_meter.reset(token)
    [(model, usage)] = meter.entries
    assert model == TTS_MODEL
    assert usage == narration.usage
    assert usage.model_calls == 1 and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert Decimal(0) < PriceTable().cost(model, usage) < Decimal("0.01")
    assert PriceTable().price(TTS_MODEL).output_per_million == Decimal("10")


async def test_concurrent_narrations_meter_their_own_commands(speech_fake: FakeGenAI) -> None:
    async def command(text: str) -> tuple[Meter, float]:
        meter = Meter()
        current_meter.set(meter)
        return meter, (await narrate(text)).duration_seconds

    results = await asyncio.gather(*(command("word " * n) for n in range(1, 9)))
    assert all(len(meter.entries) == 1 for meter, _ in results)
    durations = [seconds for _, seconds in results]
    assert durations == sorted(durations) and len(set(durations)) == len(durations)


async def test_the_stitch_mixes_a_narration_over_its_clip(speech_fake: FakeGenAI, tmp_path: Path) -> None:
    narration = await narrate("The cat raises the sail and the wind takes the little boat out to sea.")
    assert 1.0 < narration.duration_seconds < 5.0
    voice = tmp_path / "segment1.wav"
    voice.write_bytes(narration.wav)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(tiny_mp4(5.0, "9:16"))
    segments = (Segment(clip, "The cat raises the sail.", voice),)
    plain = await stitch(StitchRequest((Segment(clip, "x", None),), tmp_path / "plain.mp4", captions=False, **SMALL))
    voiced = await stitch(StitchRequest(segments, tmp_path / "voiced.mp4", captions=False, **SMALL))
    spoken = (0.2, 0.9)
    assert _level(_sound(voiced.video, *spoken), SPEECH_HZ) > 4 * _level(_sound(plain.video, *spoken), SPEECH_HZ)
    assert _level(_sound(voiced.video, *spoken), TONE_HZ) < _level(_sound(plain.video, *spoken), TONE_HZ)


def _wav_seconds(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as source:
        return source.getnframes() / source.getframerate()


def _dominant_hz(wav: bytes) -> float:
    import numpy as np

    with wave.open(io.BytesIO(wav)) as source:
        samples = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2").astype(np.float64)
        rate = source.getframerate()
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def test_narration_longer_than_its_clip_is_sped_up_to_fit_keeping_its_pitch() -> None:
    from bot.sandbox.media import speech_pcm

    wav = pcm_to_wav(speech_pcm(7.0), 24_000)
    fitted = fit_to(wav, 6.0)
    assert abs(_wav_seconds(fitted) - (6.0 - TAIL_SECONDS)) < 0.05
    assert abs(_dominant_hz(fitted) - SPEECH_HZ) < 5, "atempo changes the speed, not the voice's pitch"


def test_narration_is_sped_up_at_most_so_much_and_left_alone_when_it_fits() -> None:
    from bot.sandbox.media import speech_pcm

    much_too_long = pcm_to_wav(speech_pcm(16.0), 24_000)
    assert abs(_wav_seconds(fit_to(much_too_long, 8.0)) - 16.0 / MAX_SPEEDUP) < 0.05
    fits = pcm_to_wav(speech_pcm(3.0), 24_000)
    assert fit_to(fits, 4.0) is fits
