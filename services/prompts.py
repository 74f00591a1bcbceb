"""Checks shared by every text service: one place decides what a usable prompt is."""

from __future__ import annotations

import re
import unicodedata

from connectors.errors import UserInputError


def _unstorable_class() -> str:
    """C0 controls but tab, newline and carriage return; DEL and the C1 controls; lone surrogates;
    and the 66 Unicode noncharacters (U+FDD0-U+FDEF and the last two code points of every plane)."""
    ranges = ["\x00-\x08", "\x0b\x0c", "\x0e-\x1f", "\x7f-\x9f", "\ud800-\udfff", "\ufdd0-\ufdef"]
    ranges += [chr(plane * 0x10000 + 0xFFFE) + chr(plane * 0x10000 + 0xFFFF) for plane in range(17)]
    return "[" + "".join(ranges) + "]"


_UNSTORABLE = re.compile(_unstorable_class())


def storable(text: str) -> str:
    """``text`` without the characters a store cannot hold (PostgreSQL refuses NUL, UTF-8 refuses
    lone surrogates) or that mean nothing in chat text (other control characters, noncharacters).

    Format characters stay: the zero-width joiner builds emoji (👩‍💻) and the zero-width non-joiner
    is part of Persian and Indic words (می‌خواهم); bidi marks keep mixed-direction text readable.
    """
    return _UNSTORABLE.sub("", text)


def _has_visible(text: str) -> bool:
    """Whether ``text`` shows anything: format characters (zero-width spaces and joiners, BOM, bidi
    marks) and spaces do not, so a prompt made only of them must not reach a paid model. Stops at
    the first visible character, which is almost always the first one."""
    return any(not char.isspace() and unicodedata.category(char) != "Cf" for char in text)


def clean_prompt(text: str | None, *, what: str, max_chars: int) -> str:
    """Strip and bound user text, refusing empty or over-long input before any paid call."""
    cleaned = " ".join(storable(text or "").split())
    if not _has_visible(cleaned):
        raise UserInputError(f"Please describe the {what}.")
    if len(cleaned) > max_chars:
        raise UserInputError(f"The {what} is {len(cleaned)} characters; the limit is {max_chars}.")
    return cleaned


def check_range(value: int, *, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UserInputError(f"{name} must be between {low} and {high} (got {value}).")
    return value
