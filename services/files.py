"""Files under MEDIA_DIR are written whole or not at all: a crash never leaves half a result that a
restart would take for a finished one."""

from __future__ import annotations

from pathlib import Path


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` first, then rename it into place (atomic on one filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    partial.replace(path)
