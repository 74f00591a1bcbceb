"""Platform-neutral replies: text blocks (split only between blocks) and media, and the splitter
every adapter uses to fit them into its message limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class Media:
    kind: Literal["image", "video", "document"]
    data: bytes = field(repr=False)
    filename: str
    caption: str = ""
    mime_type: str = "application/octet-stream"


@dataclass
class Reply:
    """The one final answer to a command: a result, or an error (``is_error``)."""

    blocks: list[str]
    media: list[Media] = field(default_factory=list)
    is_error: bool = False
    result: BaseModel | None = None
    footer: str = ""
    on_delivered: Callable[[], Awaitable[None]] | None = None
    confirmation: str | None = None  # a token: adapters may render "/confirm <token>" as a button
    #: False for a notice about the work (queued, cancelled elsewhere) rather than what an upstream
    #: produced: only upstream output is labelled as sandbox output.
    upstream_output: bool = True

    @property
    def text(self) -> str:
        return "\n\n".join([*self.blocks, self.footer] if self.footer else self.blocks)

    @classmethod
    def error(cls, message: str) -> Reply:
        return cls(blocks=[f"⚠️ {message}"], is_error=True)


def split_blocks(blocks: list[str], limit: int) -> list[str]:
    """Pack blocks into messages of at most ``limit`` characters, splitting between blocks.

    A single block longer than the limit is cut at the last line break or space before it.
    """
    messages: list[str] = []
    current = ""
    for block in blocks:
        pieces = [block]
        if len(block) > limit:
            pieces = []
            rest = block
            while len(rest) > limit:
                cut = rest.rfind("\n", 0, limit)
                if cut < limit // 2:
                    cut = rest.rfind(" ", 0, limit)
                if cut < limit // 2:
                    cut = limit
                pieces.append(rest[:cut].rstrip())
                rest = rest[cut:].lstrip()
            if rest:
                pieces.append(rest)
        for piece in pieces:
            joined = f"{current}\n\n{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                if current:
                    messages.append(current)
                current = piece
    if current:
        messages.append(current)
    return messages
