"""The terminal chat: line parsing, a piped script against the fakes, and the installed command end to end."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from bot.console.adapter import CONSOLE_USER, PROMPT, parse_line, run_console
from bot.core.dispatcher import SANDBOX_FOOTER, ChatCore
from bot.core.jobs import JobCommands
from connectors.errors import UserInputError
from services.memory import UserMemory
from tests.bot.helpers import PNG_SIGNATURE, RecordingResponder, catalogue, png_bytes
from tests.fakes import FakeGenAI, FakeOpenRouter

Upstreams = tuple[FakeOpenRouter, FakeGenAI]

REELWRIGHT = Path(sys.executable).parent / "reelwright"
PICTURE = png_bytes(24, 24)


@pytest.fixture
def core() -> ChatCore:
    return ChatCore(catalogue(UserMemory()))


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "hero.png"
    path.write_bytes(PICTURE)
    return path


# -- parse_line ------------------------------------------------------------------------------------


def test_a_command_line(core: ChatCore) -> None:
    parsed = parse_line(core, "/story a dragon learns to fly segments=3\n")
    assert parsed is not None
    assert parsed.command == "story"
    assert parsed.text == "a dragon learns to fly segments=3"
    assert parsed.image is None
    assert parsed.user == CONSOLE_USER
    assert parsed.upload_limit is None  # a terminal takes files of any size


def test_command_names_are_lower_cased(core: ChatCore) -> None:
    parsed = parse_line(core, "/STORY a dragon")
    assert parsed is not None and parsed.command == "story"


@pytest.mark.parametrize("line", ["", "   ", "\n"])
def test_blank_lines_are_skipped(core: ChatCore, line: str) -> None:
    assert parse_line(core, line) is None


@pytest.mark.parametrize("line", ["hello there", "help", "?", "story a dragon"])
def test_text_that_is_not_a_command_asks_for_help(core: ChatCore, line: str) -> None:
    parsed = parse_line(core, line)
    assert parsed is not None
    assert parsed.command == "help"
    assert parsed.text == ""


async def test_image_path_as_the_first_word(core: ChatCore, picture: Path) -> None:
    parsed = parse_line(core, f"/character {picture} Captain Whiskers")
    assert parsed is not None
    assert parsed.command == "character"
    assert parsed.text == "Captain Whiskers"
    assert parsed.image is not None
    assert parsed.image.filename == "hero.png"
    assert parsed.image.size == len(PICTURE)
    assert await parsed.image.read() == PICTURE


async def test_image_option(core: ChatCore, picture: Path) -> None:
    parsed = parse_line(core, f"/character image={picture} Captain")
    assert parsed is not None
    assert parsed.text == "Captain"
    assert parsed.image is not None
    assert await parsed.image.read() == PICTURE


@pytest.mark.parametrize("form", ["image='{path}'", '"{path}"'])
async def test_quoted_image_path_with_a_space(core: ChatCore, tmp_path: Path, form: str) -> None:
    path = tmp_path / "my hero.png"
    path.write_bytes(png_bytes())
    parsed = parse_line(core, "/video " + form.format(path=path) + " waves hello")
    assert parsed is not None
    assert parsed.image is not None
    assert parsed.text == "waves hello"


async def test_image_option_for_a_missing_file(upstreams: Upstreams, core: ChatCore, tmp_path: Path) -> None:
    parsed = parse_line(core, f"/character image={tmp_path / 'nope.png'} Captain")
    assert parsed is not None
    assert parsed.text == "Captain"
    responder = RecordingResponder()
    reply = await core.handle(parsed, responder)
    assert reply.is_error
    assert "no image file" in reply.text
    text, media = upstreams
    assert text.requests == [] and media.requests == []


async def test_missing_image_file_for_video_is_refused(upstreams: Upstreams, core: ChatCore, tmp_path: Path) -> None:
    parsed = parse_line(core, f"/video image={tmp_path / 'nope.png'} a cat surfing")
    assert parsed is not None
    responder = RecordingResponder()
    reply = await core.handle(parsed, responder)
    _, media = upstreams
    assert media.video_generation_requests == []
    assert reply.is_error


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


@pytest.mark.parametrize("make_path", [lambda _: Path("/dev/zero"), fifo, directory], ids=["dev-zero", "fifo", "dir"])
async def test_only_a_regular_file_is_read(
    upstreams: Upstreams, core: ChatCore, tmp_path: Path, make_path: Callable[[Path], Path]
) -> None:
    """/dev/zero never ends and a FIFO without a writer never answers: both are refused at once."""
    path = make_path(tmp_path)
    parsed = parse_line(core, f"/character image={path} Captain")
    assert parsed is not None and parsed.image is not None
    reply = await core.handle(parsed, RecordingResponder())
    assert reply.is_error
    assert reply.text == f"⚠️ {path} is not a regular file. Please name an image file."
    text, media = upstreams
    assert text.requests == [] and media.requests == []


async def test_a_file_that_grows_past_the_cap_while_read_is_cut_off(core: ChatCore, tmp_path: Path) -> None:
    path = tmp_path / "growing.png"
    path.write_bytes(PICTURE)
    parsed = parse_line(core, f"/character image={path} Captain")
    assert parsed is not None and parsed.image is not None
    with path.open("ab") as grown:
        grown.truncate(len(PICTURE) + 11 * 1024 * 1024)
    with pytest.raises(UserInputError, match=r"^The image is over the 10 MB limit\. Please send a smaller image\.$"):
        await parsed.image.read()


def test_a_file_name_is_only_an_image_for_commands_that_take_one(core: ChatCore, picture: Path) -> None:
    parsed = parse_line(core, f"/story {picture} goes on an adventure")
    assert parsed is not None
    assert parsed.image is None
    assert parsed.text == f"{picture} goes on an adventure"


def test_an_ordinary_first_word_is_not_an_image(
    core: ChatCore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parsed = parse_line(core, "/character Captain")
    assert parsed is not None
    assert parsed.image is None
    assert parsed.text == "Captain"


@pytest.mark.parametrize("command", ["video", "character"])
def test_a_first_word_too_long_for_a_file_name_is_text(core: ChatCore, command: str) -> None:
    """Probing a 300-character word as a path raises ENAMETOOLONG: the word is text, not a crash."""
    word = "a" * 300
    parsed = parse_line(core, f"/{command} {word} surfing")
    assert parsed is not None
    assert parsed.image is None
    assert parsed.text == f"{word} surfing"


def test_a_home_folder_of_no_such_user_is_text(core: ChatCore) -> None:
    parsed = parse_line(core, "/character ~no-such-user-here Captain")
    assert parsed is not None
    assert parsed.image is None
    assert parsed.text == "~no-such-user-here Captain"


async def test_an_image_option_too_long_for_a_file_name_is_refused(upstreams: Upstreams, core: ChatCore) -> None:
    parsed = parse_line(core, f"/character image={'a' * 300} Captain")
    assert parsed is not None and parsed.image is not None
    reply = await core.handle(parsed, RecordingResponder())
    assert reply.is_error
    assert reply.text.startswith("⚠️ I cannot read aaa")
    text, media = upstreams
    assert text.requests == [] and media.requests == []


@pytest.mark.parametrize("command", ["character", "video"])
async def test_help_for_an_image_command_says_how_to_give_the_image_on_the_console(command: str) -> None:
    out = io.StringIO()
    await run_console(ChatCore(catalogue()), Path("unused"), io.StringIO(f"/help {command}\n"), out)
    shown = out.getvalue()
    assert "attach an image" not in shown
    assert "image=<path>" in re.search(r"^Usage: .*$", shown, re.M).group(0)  # type: ignore[union-attr]
    assert re.search(
        r"^  image: .+; on the console, name the file: image=<path>, or its path as the first word", shown, re.M
    )


async def test_a_missing_image_is_explained_the_console_way(upstreams: Upstreams, core: ChatCore) -> None:
    parsed = parse_line(core, "/character Captain")
    assert parsed is not None
    reply = await core.handle(parsed, RecordingResponder())
    assert reply.text == "⚠️ /character needs an image.\nUsage: /character (image=<path>) [name]"


# -- run_console against the fakes -----------------------------------------------------------------


def check_saved_media(printed: str, media_dir: Path) -> None:
    """The video and the thumbnail were saved under ``media_dir`` and their paths printed."""
    saved = re.findall(r"\[(video|image) saved: (.+)\]", printed)
    assert [kind for kind, _ in saved] == ["video", "image"]
    for kind, path_text in saved:
        path = Path(path_text)
        assert path.parent == media_dir
        assert path.is_file()
        data = path.read_bytes()
        if kind == "video":
            assert path.suffix == ".mp4" and data[4:8] == b"ftyp"
        else:
            assert path.suffix == ".png" and data.startswith(PNG_SIGNATURE)
    assert sorted(p.suffix for p in media_dir.iterdir()) == [".mp4", ".png"]


async def test_a_piped_script(upstreams: Upstreams, tmp_path: Path, picture: Path, local_jobs: JobCommands) -> None:
    _, media = upstreams
    media_dir = tmp_path / "media"
    script = "\n".join(
        [
            "/story a dragon learns to fly segments=2",
            "",
            f"/character {picture} Captain",
            "/video segment=1 character=Captain",
            "/thumbnail",
            "/dance",
            "/quit",
            "/help",
        ]
    )
    out = io.StringIO()
    handled = await run_console(
        ChatCore(catalogue(UserMemory(), local_jobs)), media_dir, io.StringIO(script + "\n"), out
    )
    assert handled == 5
    printed = out.getvalue()
    assert "2 segments" in printed
    assert "🧑‍🎨 Captain" in printed
    assert "Unknown command /dance" in printed
    assert "Commands:" not in printed  # nothing after /quit
    assert "  … " in printed  # progress lines

    check_saved_media(printed, media_dir)
    assert len(media.video_generation_requests) == 1


async def test_console_ends_at_eof_without_a_trailing_newline(upstreams: Upstreams, tmp_path: Path) -> None:
    out = io.StringIO()
    handled = await run_console(ChatCore(catalogue()), tmp_path / "media", io.StringIO("/help story"), out)
    assert handled == 1
    assert "Usage: /story" in out.getvalue()
    assert not (tmp_path / "media").exists()


# -- the installed command -----------------------------------------------------------------------


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No keys, tokens, proxies or settings from the developer's shell: the sandbox must be used."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONIOENCODING": "utf-8",
        "LANG": "C.UTF-8",
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the tree under test, not the installed one
    env.update(extra)
    assert not any(key.endswith(("_API_KEY", "_TOKEN")) for key in env)
    return env


def reelwright(tmp_path: Path, stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REELWRIGHT), "console"],
        input=stdin,
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_console_end_to_end_in_the_sandbox(tmp_path: Path) -> None:
    result = reelwright(tmp_path, "/story a dragon learns to fly\n")
    assert result.returncode == 0, result.stderr
    assert "segments" in result.stdout
    assert SANDBOX_FOOTER in result.stdout
    assert "SANDBOX" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_short_in_the_sandbox_is_saved_as_a_playable_mp4(tmp_path: Path) -> None:
    result = reelwright(tmp_path, "/short a cat opens a bakery segments=3\n")
    assert result.returncode == 0, result.stderr
    saved = {
        kind: tmp_path / path for kind, path in re.findall(r"\[(video|image|document) saved: (.+)\]", result.stdout)
    }
    assert set(saved) == {"video", "image", "document"}, result.stdout
    assert saved["video"].suffix == ".mp4" and saved["document"].suffix == ".srt"
    with av.open(str(saved["video"])) as container:
        [video] = container.streams.video
        assert len(container.streams.audio) == 1
        assert video.height > video.width  # 9:16
        assert abs(float(container.duration or 0) / av.time_base - story_seconds(result.stdout)) <= 0.1
    assert "Ready to post" in result.stdout and SANDBOX_FOOTER in result.stdout
    assert "Traceback" not in result.stderr


def story_seconds(printed: str) -> int:
    """The story's length as the console showed it ("3 segments · 18 s")."""
    match = re.search(r"3 segments · (\d+) s", printed)
    assert match is not None, printed
    return int(match.group(1))


def test_a_bad_setting_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = reelwright(tmp_path, "/help\n", TEXT_TIMEOUT_SECONDS="abc")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TEXT_TIMEOUT_SECONDS" in lines[0]
    assert result.stdout == ""


def test_run_with_the_example_env_file_opens_the_console(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [str(REELWRIGHT), "run"],
        input="/help\n",
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout


# -- an interactive console: Ctrl-C, and log lines kept off the prompt ----------------------------

#: A hang guard, not a timing claim: the console exits well within it, a hang never does.
HANG_GUARD_SECONDS = 30


class Terminal:
    """``reelwright console`` on a pseudo-terminal, as an operator runs it."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        controller, device = pty.openpty()
        self.controller = controller
        self.process = subprocess.Popen(
            [str(REELWRIGHT), "console"],
            stdin=device,
            stdout=device,
            stderr=device,
            env=clean_env(tmp_path, **env),
            cwd=tmp_path,
        )
        os.close(device)
        self.screen = ""

    def read_until(self, text: str) -> str:
        """Everything shown until ``text`` appears; fails (rather than hangs) after the guard."""
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        start = len(self.screen)
        while text not in self.screen[start:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} never appeared; the screen shows:\n{self.screen}"
            ready, _, _ = select.select([self.controller], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.controller, 65536)
                except OSError:  # the program has exited and closed the terminal
                    chunk = b""
                assert chunk, f"the console ended before {text!r}; the screen shows:\n{self.screen}"
                self.screen += chunk.decode("utf-8", errors="replace")
        return self.screen[start:]

    def type(self, line: str) -> None:
        os.write(self.controller, line.encode() + b"\n")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.controller)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(**env: str) -> Terminal:
        opened.append(Terminal(tmp_path, **env))
        return opened[-1]

    yield open_terminal
    for each in opened:
        each.close()


def test_ctrl_c_at_the_prompt_exits_at_once(terminal: Callable[..., Terminal]) -> None:
    console = terminal()
    console.read_until(PROMPT)
    console.process.send_signal(signal.SIGINT)
    assert console.process.wait(timeout=HANG_GUARD_SECONDS) == 130


def test_ctrl_c_during_a_video_exits_at_once(terminal: Callable[..., Terminal]) -> None:
    console = terminal()
    console.read_until(PROMPT)
    console.type("/video a cat surfing duration=8")
    console.read_until("… ")
    console.process.send_signal(signal.SIGINT)
    assert console.process.wait(timeout=HANG_GUARD_SECONDS) == 130


def test_ctrl_c_with_piped_input_that_stays_open_exits_at_once(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(REELWRIGHT), "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=clean_env(tmp_path),
        cwd=tmp_path,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"/help story\n")
        process.stdin.flush()
        while b"Example: /story" not in process.stdout.readline():
            pass
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=HANG_GUARD_SECONDS) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
        process.stdout.close()


def test_interactive_log_lines_go_to_the_log_file_at_the_configured_level(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    console = terminal(LOG_LEVEL="INFO")
    before_prompt = console.read_until(PROMPT)
    log_file = tmp_path / "reelwright.log"
    assert f"Log lines go to {log_file}." in before_prompt
    console.type("/story a dragon learns to fly")
    session = console.read_until(PROMPT)
    console.type("/quit")
    assert console.process.wait(timeout=HANG_GUARD_SECONDS) == 0
    assert "segments" in session
    assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b", session), session
    logged = log_file.read_text(encoding="utf-8")
    assert re.search(r" INFO bot\.core\.dispatcher \[[0-9a-f]{8}\]: /story from console:local$", logged, re.M), logged


def test_log_file_setting_and_warning_level(terminal: Callable[..., Terminal], tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "bot.log"
    console = terminal(LOG_LEVEL="WARNING", LOG_FILE=str(log_file))
    console.read_until(PROMPT)
    console.type("/help")
    console.read_until(PROMPT)
    console.type("/quit")
    assert console.process.wait(timeout=HANG_GUARD_SECONDS) == 0
    logged = log_file.read_text(encoding="utf-8")
    assert "WARNING bot.runtime" in logged and " INFO " not in logged
    assert not (tmp_path / "reelwright.log").exists()
