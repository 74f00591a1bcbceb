"""Checks shared by every text service: one place decides what a usable prompt is."""

from __future__ import annotations

import unicodedata

from connectors.errors import UserInputError


def _visible(text: str) -> str:
    """Drop format characters (zero-width spaces and joiners, BOM, bidi marks): they are invisible,
    so a prompt made only of them is empty to the user and must not reach a paid model."""
    return "".join(char for char in text if unicodedata.category(char) != "Cf")


def clean_prompt(text: str | None, *, what: str, max_chars: int) -> str:
    """Strip and bound user text, refusing empty or over-long input before any paid call."""
    cleaned = " ".join(_visible(text or "").split())
    if not cleaned:
        raise UserInputError(f"Please describe the {what}.")
    if len(cleaned) > max_chars:
        raise UserInputError(f"The {what} is {len(cleaned)} characters; the limit is {max_chars}.")
    return cleaned


def check_range(value: int, *, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UserInputError(f"{name} must be between {low} and {high} (got {value}).")
    return value
