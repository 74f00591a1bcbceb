"""Narration: a segment's text spoken by a Gemini text-to-speech voice, as a WAV the stitch can mix."""

from __future__ import annotations

import io
import wave

import av
from pydantic import BaseModel, ConfigDict, Field

from connectors import genai_connector
from connectors.errors import UserInputError
from services.config import service_config
from services.metering import meter_usage
from services.prompts import clean_prompt
from services.usage import Usage

#: Prebuilt voice names are single words (Kore, Puck, Charon, ...); anything else is refused before a call.
MAX_VOICE_CHARS = 40


class Narration(BaseModel):
    """One spoken segment: a mono 16-bit WAV and how long it plays."""

    model_config = ConfigDict(frozen=True)

    wav: bytes = Field(repr=False)
    sample_rate: int
    duration_seconds: float
    model: str
    voice: str
    usage: Usage


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Wrap signed 16-bit little-endian mono PCM in a WAV header (the stdlib ``wave`` writes it)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def clean_voice(voice: str | None) -> str:
    """The voice to use: the configured default when none is given; a name made of letters only."""
    name = (voice or "").strip() or service_config().tts_voice
    if not name.isalpha() or len(name) > MAX_VOICE_CHARS:
        raise UserInputError(f'"{name[:MAX_VOICE_CHARS]}" is not a voice name (for example Kore or Puck).')
    return name


async def narrate(text: str, voice: str | None = None) -> Narration:
    """Speak ``text`` (cleaned and bounded first: empty text never reaches the paid call)."""
    config = service_config()
    cleaned = clean_prompt(text, what="narration", max_chars=config.max_prompt_chars)
    voice_name = clean_voice(voice)
    model = config.tts_model
    speech = await genai_connector.synthesize_speech(text=cleaned, voice=voice_name, model=model)
    usage = Usage(model_calls=1, prompt_tokens=speech.prompt_tokens, completion_tokens=speech.output_tokens)
    meter_usage(model, usage)
    frames = len(speech.pcm) // 2
    return Narration(
        wav=pcm_to_wav(speech.pcm, speech.sample_rate),
        sample_rate=speech.sample_rate,
        duration_seconds=frames / speech.sample_rate,
        model=model,
        voice=voice_name,
        usage=usage,
    )


#: Narration longer than its clip is sped up by at most this much (still natural speech); the stitch
#: cuts whatever is still too long.
MAX_SPEEDUP = 1.3
#: Kept free at the end of a segment, so one sentence does not run into the next clip's.
TAIL_SECONDS = 0.2


def fit_to(wav: bytes, seconds: float) -> bytes:
    """``wav`` sped up (pitch kept, FFmpeg's ``atempo``) to end ``TAIL_SECONDS`` before ``seconds``,
    by at most ``MAX_SPEEDUP``; unchanged when it already fits. Blocking: run it in a thread."""
    with wave.open(io.BytesIO(wav)) as source:
        rate, frames = source.getframerate(), source.getnframes()
    spoken = frames / rate
    room = max(seconds - TAIL_SECONDS, 0.5)
    if spoken <= room:
        return wav
    tempo = min(spoken / room, MAX_SPEEDUP)
    output = io.BytesIO()
    with av.open(io.BytesIO(wav), "r", format="wav") as container, av.open(output, "w", format="wav") as out:
        stream = container.streams.audio[0]
        encoder = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        graph = av.filter.Graph()
        source_node = graph.add_abuffer(template=stream)
        tempo_node = graph.add("atempo", f"{tempo:.4f}")
        sink = graph.add("abuffersink")
        source_node.link_to(tempo_node)
        tempo_node.link_to(sink)
        graph.configure()
        for frame in container.decode(stream):
            graph.push(frame)
            _drain(graph, encoder, out)
        graph.push(None)
        _drain(graph, encoder, out)
        out.mux(encoder.encode(None))
    return output.getvalue()


def _drain(graph: av.filter.Graph, encoder: av.AudioStream, out: av.container.OutputContainer) -> None:
    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        assert isinstance(frame, av.AudioFrame)
        frame.pts = None
        out.mux(encoder.encode(frame))
