"""multipart/form-data bodies as the fakes receive them (Discord attachments, Telegram uploads).

Split with bytes operations rather than the stdlib ``email`` parser: that one reads a binary part
line by line, and cost the benchmark's fake Discord about 3 ms of CPU per 100 KB storyboard upload,
which on a two-core machine slowed the bot it was measuring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAMETER = re.compile(r';\s*([\w*.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def header_parameters(value: str) -> dict[str, str]:
    """``name="x"; filename="y.png"`` of a Content-Type or Content-Disposition value."""
    return {
        match.group(1).lower(): (
            re.sub(r"\\(.)", r"\1", match.group(2)) if match.group(2) is not None else match.group(3)
        )
        for match in _PARAMETER.finditer(value)
    }


def parse_form_data(content_type: str, body: bytes) -> list[FormPart]:
    """The parts of a multipart/form-data body, in order; a body without a boundary has none."""
    boundary = header_parameters(content_type).get("boundary")
    if not boundary:
        return []
    parts: list[FormPart] = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            continue
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = header_parameters(headers.get("content-disposition", ""))
        parts.append(
            FormPart(
                name=disposition.get("name", ""),
                filename=disposition.get("filename"),
                content_type=headers.get("content-type", "text/plain").split(";")[0].strip().lower(),
                data=data.removesuffix(b"\r\n"),
            )
        )
    return parts
