"""The settings services need (model names, limits, polling), set once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceConfig:
    story_model: str = "google/gemini-2.5-flash"
    meme_model: str = "google/gemini-2.5-flash"
    content_model: str = "google/gemini-2.5-flash"
    trends_model: str = "google/gemini-2.5-flash"
    vision_model: str = "google/gemini-2.5-flash"
    video_model: str = "veo-3.0-fast-generate-001"
    image_model: str = "imagen-4.0-generate-001"
    gemini_image_model: str = "gemini-2.5-flash-image"
    tts_model: str = "gemini-2.5-flash-preview-tts"
    tts_voice: str = "Kore"
    genai_enterprise: bool = False
    max_prompt_chars: int = 2000
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    video_poll_initial_seconds: float = 5.0
    video_poll_max_seconds: float = 10.0
    video_deadline_seconds: float = 900.0
    video_hard_deadline_seconds: float = 6 * 3600.0
    video_max_bytes: int = 200 * 1024 * 1024
    short_long_side: int = 1280
    short_max_bytes: int = 50 * 1024 * 1024

    @property
    def thumbnail_model(self) -> str:
        """Imagen needs enterprise mode in google-genai 3.x; a Gemini image model works with any key."""
        return self.image_model if self.genai_enterprise else self.gemini_image_model


_config = ServiceConfig()


def configure_services(config: ServiceConfig) -> None:
    global _config
    _config = config


def service_config() -> ServiceConfig:
    return _config
