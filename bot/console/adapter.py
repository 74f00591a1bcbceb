"""A terminal chat on the same commands: one command per line, replies printed, media saved.

Interactive with a prompt on a terminal; with piped stdin it reads every line to EOF and answers
each in turn, which is what scripts and the README's one-liner use.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import TextIO

from bot.core.context import ChatRef, IncomingImage, Invocation, UserRef, regular_file_chunks
from bot.core.dispatcher import ChatCore
from bot.core.replies import Reply

CONSOLE_USER = UserRef(platform="console", id="local", name="you")
CONSOLE_CHAT = ChatRef(platform="console", id="local")
PROMPT = "reelwright> "


async def _console_user_is_admin() -> bool:
    """Whoever runs the console owns the bot."""
    return True


class ConsoleResponder:
    def __init__(self, out: TextIO, media_dir: Path) -> None:
        self.out = out
        self.media_dir = media_dir

    async def show_progress(self, text: str) -> None:
        print(f"  … {text}", file=self.out, flush=True)

    async def deliver(self, reply: Reply) -> None:
        print(reply.text, file=self.out)
        for media in reply.media:
            self.media_dir.mkdir(parents=True, exist_ok=True)
            path = self.media_dir / f"{uuid.uuid4().hex[:8]}-{media.filename}"
            await asyncio.to_thread(path.write_bytes, media.data)
            print(f"  [{media.kind} saved: {path}]", file=self.out)
        print(file=self.out, flush=True)


class ConsoleSender:
    """Delivers job results that finish after their command (e.g. resumed after a restart)."""

    def __init__(self, out: TextIO, media_dir: Path) -> None:
        self.responder = ConsoleResponder(out, media_dir)

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        await self.responder.deliver(reply)


def _regular_file_size(path: Path) -> int | None:
    """The size of a regular file at ``path``, or None when there is none: any error while probing
    (a name too long for the file system, a permission denied) means "not a file", so the word stays text."""
    try:
        return path.stat().st_size if path.is_file() else None
    except (OSError, ValueError):
        return None


def _expand_home(path: Path) -> Path:
    """``~/x`` → the home folder; a ``~name`` with no such user stays as typed."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def _file_image(path: Path, size: int | None) -> IncomingImage:
    """A local file as the upload: its size is declared up front, and only a regular file is read."""
    return IncomingImage(filename=path.name, stream=partial(regular_file_chunks, path), size=size)


_FIRST_WORD = re.compile(r"""^(image=)?(?:"([^"]*)"|'([^']*)'|(\S+))\s*(.*)$""", re.DOTALL)


def parse_line(core: ChatCore, line: str) -> Invocation | None:
    """``/cmd args`` → an invocation. For commands that take an image, ``image=PATH`` or a first word
    that is an existing file (quoted if it has spaces) is the upload; a named file that does not
    exist is reported when the command reads it, before any paid call."""
    line = line.strip()
    if not line:
        return None
    if not line.startswith("/"):
        return Invocation(command="help", user=CONSOLE_USER, chat=CONSOLE_CHAT, text="")
    name, _, rest = line[1:].partition(" ")
    name = name.lower()
    command = core.commands.get(name)
    image = None
    if command is not None and command.image_option is not None:
        match = _FIRST_WORD.match(rest.strip())
        if match:
            explicit, double_quoted, single_quoted, bare, remainder = match.groups()
            word = double_quoted if double_quoted is not None else single_quoted
            quoted = word is not None
            path = _expand_home(Path(word if quoted else bare))
            size = _regular_file_size(path)
            if explicit or size is not None or (quoted and path.suffix):
                image = _file_image(path, size)
                rest = remainder
    return Invocation(
        command=name, user=CONSOLE_USER, chat=CONSOLE_CHAT, text=rest, image=image, is_admin=_console_user_is_admin
    )


class LineReader:
    """Lines from ``stdin``, awaited on the event loop where the OS can poll it (a terminal, a pipe).

    No thread sits blocked in a read, so Ctrl-C (which cancels the main task) ends the console at
    once: a blocked reader thread would hold the exit until the next Enter. A source that cannot be
    polled (a regular file, an in-memory text) is read in a worker thread, where a read never waits.
    """

    def __init__(self, stdin: TextIO) -> None:
        self.stdin = stdin
        self.fd = _pollable_fd(stdin)
        self.decoder = codecs.getincrementaldecoder(getattr(stdin, "encoding", None) or "utf-8")(errors="replace")
        self.pending = ""
        self.at_eof = False

    async def readline(self) -> str | None:
        """The next line with its newline (the last one may lack it), or None at end of input."""
        if self.fd is None:
            line = await asyncio.to_thread(self.stdin.readline)
            return line or None
        while "\n" not in self.pending and not self.at_eof:
            chunk = await _read_when_ready(self.fd)
            self.at_eof = not chunk
            self.pending += self.decoder.decode(chunk, final=self.at_eof)
        if not self.pending:
            return None
        line, newline, self.pending = self.pending.partition("\n")
        return line + newline


def _pollable_fd(stdin: TextIO) -> int | None:
    """The file descriptor behind ``stdin`` if the event loop can wait on it, else None."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    loop = asyncio.get_running_loop()
    try:
        loop.add_reader(fd, lambda: None)
    except (OSError, ValueError, NotImplementedError):
        return None
    loop.remove_reader(fd)
    return fd


async def _read_when_ready(fd: int) -> bytes:
    """One read from ``fd`` once it is readable, so the read itself returns without waiting."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return os.read(fd, 65536)


async def run_console(core: ChatCore, media_dir: Path, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    """Serve commands from ``stdin`` until EOF or /quit; returns the number of commands handled."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    responder = ConsoleResponder(out, media_dir)
    interactive = stdin.isatty()
    if interactive:
        print("Reelwright console. Type /help, or /quit to leave.", file=out, flush=True)
    reader = LineReader(stdin)
    handled = 0
    while True:
        if interactive:
            print(PROMPT, end="", file=out, flush=True)
        line = await reader.readline()
        if line is None:
            if interactive:
                print(file=out, flush=True)
            break
        if line.strip() in ("/quit", "/exit"):
            break
        invocation = parse_line(core, line)
        if invocation is None:
            continue
        await core.handle(invocation, responder)
        handled += 1
    return handled
