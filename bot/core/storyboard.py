"""A story's contact sheets: one image with every segment numbered, its clip length and narration,
so a creator sees the story's shape at a glance; once the clips exist, the same with each clip's
first frame (``frames_sheet_or_none``), so the creator sees what was actually filmed.

Drawn with Pillow in a worker process (``draw_storyboard``), never on the event loop's thread nor
beside it in a thread: see ``draw_storyboard`` for why. This module imports only the standard
library at run time, and Pillow where it draws (the worker processes preload it), so the bot does
not carry Pillow until it draws and a worker starts small; the story travels to it as plain data.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import textwrap
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from services.child_processes import exit_with_parent

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

    from services.story import Story

log = logging.getLogger(__name__)

#: What the worker processes load before their first sheet (the forkserver preloads them).
PILLOW_MODULES = ("PIL.Image", "PIL.ImageDraw", "PIL.ImageFont", "PIL.JpegImagePlugin")

CELL_WIDTH = 360
CELL_HEIGHT = 200
MAX_COLUMNS = 4
MARGIN = 16
HEADER = 70
BACKGROUND = (245, 245, 240)
PALETTE = [(52, 73, 94), (22, 160, 133), (142, 68, 173), (211, 84, 0), (41, 128, 185), (192, 57, 43)]
MAX_CELLS = 60
JPEG_QUALITY = 85

STORYBOARD_FILENAME = "storyboard.jpg"
STORYBOARD_MIME = "image/jpeg"


class Cell(NamedTuple):
    number: int
    duration_seconds: int
    narration: str
    visual_prompt: str


class Sheet(NamedTuple):
    """What a contact sheet shows: plain data, cheap to send to a worker process."""

    title: str
    segment_count: int
    total_seconds: int
    cells: tuple[Cell, ...]


def sheet_of(story: Story) -> Sheet:
    return Sheet(
        title=story.title,
        segment_count=len(story.segments),
        total_seconds=story.total_seconds,
        cells=tuple(
            Cell(s.number, s.duration_seconds, s.narration, s.visual_prompt) for s in story.segments[:MAX_CELLS]
        ),
    )


def grid(cell_count: int) -> tuple[int, int]:
    """(columns, rows): a row per four cells, the cells spread evenly over the rows, so five
    segments make 3 + 2 rather than 4 + 1 with three empty cells to draw and encode."""
    rows = max(1, -(-cell_count // MAX_COLUMNS))
    columns = max(1, -(-cell_count // rows))
    return columns, rows


FRAME_CELL_WIDTH = 436
FRAME_CELL_HEIGHT = 308
FRAME_PADDING = 12
#: A clip's first frame is fitted (never stretched) into this box: 9:16, as a short is filmed, and
#: half the 320×568 frames the short pipeline takes, which JPEG's DCT scaling decodes at exactly
#: this size: no resampling, a third of the cost of decoding and scaling (0.2 against 0.6 ms).
FRAME_BOX = (160, 284)
FRAME_LETTERBOX = (24, 24, 24)
NARRATION_SIZE = 17
NARRATION_LINE = 22
NARRATION_TOP = 58
#: No frame is decoded above this many pixels (a 4K frame is 8.3 million): a bomb is refused, not drawn.
MAX_FRAME_PIXELS = 40_000_000
#: Narration beyond this many characters could never show in a cell; it is not even measured.
MAX_NARRATION_CHARS = 1_000


class FrameCell(NamedTuple):
    """A segment with its clip's first frame (JPEG bytes; None when the clip is missing)."""

    number: int
    duration_seconds: int
    narration: str
    frame: bytes | None


class FramesSheet(NamedTuple):
    """What a frames contact sheet shows: plain data (the frames as bytes), cheap to send to a worker."""

    title: str
    segment_count: int
    total_seconds: int
    cells: tuple[FrameCell, ...]


class FramesDrawn(NamedTuple):
    """A drawn frames sheet, and the segments whose frame could not be read (drawn as coloured cells)."""

    jpeg: bytes
    unreadable: tuple[int, ...]


def frames_sheet_of(story: Story, frames: Sequence[bytes | None]) -> FramesSheet:
    """``frames[i]`` belongs to ``story.segments[i]``; a segment with no entry has no frame."""
    return FramesSheet(
        title=story.title,
        segment_count=len(story.segments),
        total_seconds=story.total_seconds,
        cells=tuple(
            FrameCell(s.number, s.duration_seconds, s.narration, frames[i] if i < len(frames) else None)
            for i, s in enumerate(story.segments[:MAX_CELLS])
        ),
    )


def frame_cell_origin(index: int, columns: int) -> tuple[int, int]:
    """The top-left corner of cell ``index`` on a frames sheet of ``columns`` columns."""
    column, row = index % columns, index // columns
    return MARGIN + column * (FRAME_CELL_WIDTH + MARGIN), HEADER + row * (FRAME_CELL_HEIGHT + MARGIN)


def frame_box(index: int, columns: int) -> tuple[int, int, int, int]:
    """Where cell ``index``'s frame is drawn: (left, top, right, bottom), right and bottom exclusive."""
    left, top = frame_cell_origin(index, columns)
    left, top = left + FRAME_PADDING, top + FRAME_PADDING
    return left, top, left + FRAME_BOX[0], top + FRAME_BOX[1]


# -- drawing (runs in the worker) ---------------------------------------------------------------------

_local = threading.local()

Glyph = tuple[Any, tuple[int, int], float]
Anchor = Literal["la", "ra", "mm", "ld"]


def _font(size: int) -> ImageFont.FreeTypeFont:
    """Fonts are loaded once per thread: loading costs more than drawing, and a FreeType face
    must not be shared between threads that draw at the same time (the fallback path)."""
    cache: dict[int, ImageFont.FreeTypeFont] = _local.__dict__.setdefault("fonts", {})
    if size not in cache:
        from PIL import ImageFont

        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise RuntimeError("Pillow was built without FreeType; storyboards need it")
        cache[size] = font
    return cache[size]


def _glyphs(size: int, text: str) -> list[Glyph]:
    """Each character's mask, offset and advance, rendered once per thread and font size.

    FreeType renders every glyph again on each ``draw.text`` call (about 0.6 ms for a 45-character
    line); pasting cached masks draws the same pixels about eight times faster.
    """
    cache: dict[str, Glyph] = _local.__dict__.setdefault("glyphs", {}).setdefault(size, {})
    out = []
    for char in text:
        glyph = cache.get(char)
        if glyph is None:
            font = _font(size)
            mask, offset = font.getmask2(char, "L", anchor="la")
            glyph = cache[char] = (mask, offset, font.getlength(char))
        out.append(glyph)
    return out


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: tuple[int, int, int],
    anchor: Anchor = "la",
) -> None:
    """Draw one line from cached glyph masks with Pillow's own bitmap call, as ``ImageDraw.text``
    does internally. Anchors as Pillow's: left/right/middle, ascender/descender/middle."""
    glyphs = _glyphs(size, text)
    x, y = xy
    if anchor != "la":
        width = sum(advance for _, _, advance in glyphs)
        inked = [(offset[1], offset[1] + mask.size[1]) for mask, offset, _ in glyphs if mask.size[1]]
        top = min((t for t, _ in inked), default=0)
        bottom = max((b for _, b in inked), default=0)
        if anchor == "ra":
            x -= width
        elif anchor == "mm":
            x, y = x - width / 2, y - (top + bottom) / 2
        elif anchor == "ld":
            y -= bottom
    ink = draw._getink(fill)[0]
    for mask, offset, advance in glyphs:
        if mask.size[0] and mask.size[1]:
            draw.draw.draw_bitmap((int(x + offset[0]), int(y + offset[1])), mask, ink)
        x += advance


def _width(text: str, size: int) -> float:
    return sum(advance for _, _, advance in _glyphs(size, text))


def _fit(text: str, size: int, max_width: float) -> str:
    """``text`` cut with an ellipsis to ``max_width`` pixels, so a long title never runs into the
    summary or off a narrow (one- or two-cell) sheet."""
    if _width(text, size) <= max_width:
        return text
    while text and _width(text + "…", size) > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _card(colour_index: int, size: tuple[int, int], badge: tuple[int, int, int, int], badge_radius: int) -> Image.Image:
    """A cell's card (white, outlined in its colour) with its number badge, drawn once per process,
    colour and layout, then pasted."""
    cache: dict[tuple[object, ...], Image.Image] = _local.__dict__.setdefault("cards", {})
    key = (colour_index, size, badge, badge_radius)
    if key not in cache:
        from PIL import Image, ImageDraw

        colour = PALETTE[colour_index]
        width, height = size
        card = Image.new("RGB", (width + 1, height + 1), BACKGROUND)
        draw = ImageDraw.Draw(card)
        draw.rounded_rectangle((0, 0, width, height), radius=12, fill=(255, 255, 255), outline=colour, width=3)
        draw.rounded_rectangle(badge, radius=badge_radius, fill=colour)
        cache[key] = card
    return cache[key]


def _cell_background(colour_index: int) -> Image.Image:
    """A storyboard cell: the badge in its top left corner."""
    return _card(colour_index, (CELL_WIDTH, CELL_HEIGHT), (0, 0, 64, 44), 12)


def _canvas(
    title: str, segment_count: int, total_seconds: int, cell_count: int, cell: tuple[int, int]
) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """A sheet's background sized for its grid of ``cell``-sized cells, with the title, the
    "N segments · S s" summary and, below the cells, how many segments did not fit; returns it, its
    drawing context and the number of columns."""
    from PIL import Image, ImageDraw

    columns, rows = grid(cell_count)
    width = MARGIN + columns * (cell[0] + MARGIN)
    height = HEADER + rows * (cell[1] + MARGIN) + MARGIN
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    plural = "" if segment_count == 1 else "s"
    summary = f"{segment_count} segment{plural} · {total_seconds} s"
    _text(draw, (width - MARGIN, 24), summary, 17, (90, 90, 90), anchor="ra")
    shortened = textwrap.shorten(title, width=70, placeholder="…")
    _text(draw, (MARGIN, 16), _fit(shortened, 30, width - 3 * MARGIN - _width(summary, 17)), 30, (20, 20, 20))
    if segment_count > cell_count:
        more = f"+{segment_count - cell_count} more segments"
        _text(draw, (MARGIN, height - MARGIN), more, 17, (90, 90, 90), anchor="ld")
    return image, draw, columns


def draw_sheet(sheet: Sheet) -> bytes:
    """JPEG bytes of the contact sheet (at most 60 cells; a longer story is cut with a note).

    JPEG, not PNG: encoding is ten times cheaper (about 2 ms against 24 ms for a five-segment
    sheet, measured), which matters when a thousand stories arrive at once.
    """
    image, draw, columns = _canvas(
        sheet.title, sheet.segment_count, sheet.total_seconds, len(sheet.cells), (CELL_WIDTH, CELL_HEIGHT)
    )
    for index, cell in enumerate(sheet.cells):
        column, row = index % columns, index // columns
        left = MARGIN + column * (CELL_WIDTH + MARGIN)
        top = HEADER + row * (CELL_HEIGHT + MARGIN)
        colour_index = index % len(PALETTE)
        colour = PALETTE[colour_index]
        image.paste(_cell_background(colour_index), (left, top))
        _text(draw, (left + 32, top + 22), str(cell.number), 26, (255, 255, 255), anchor="mm")
        _text(draw, (left + CELL_WIDTH - 12, top + 12), f"{cell.duration_seconds} s", 17, colour, anchor="ra")
        for line_number, line in enumerate(textwrap.wrap(cell.narration, width=38)[:4]):
            _text(draw, (left + 14, top + 56 + line_number * 22), line, 17, (30, 30, 30))
        for line_number, line in enumerate(textwrap.wrap(cell.visual_prompt, width=44)[:2]):
            _text(draw, (left + 14, top + 150 + line_number * 19), line, 14, (120, 120, 120))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def render_storyboard(story: Story) -> bytes:
    """The contact sheet drawn here, in the calling thread (tests, benchmarks, the fallback)."""
    return draw_sheet(sheet_of(story))


def _with_ellipsis(text: str, size: int, max_width: float) -> str:
    """``text`` (one line that fits) shortened until it fits with "…" after it: more follows."""
    while text and _width(text.rstrip() + "…", size) > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _fitting_prefix(word: str, size: int, max_width: float) -> int:
    """How many of ``word``'s first characters fit ``max_width`` (at least one, so wrapping advances)."""
    used = 0.0
    for count, (_, _, advance) in enumerate(_glyphs(size, word)):
        used += advance
        if used > max_width:
            return max(1, count)
    return len(word)


def _wrap(text: str, size: int, max_width: float, max_lines: int) -> list[str]:
    """``text`` wrapped to ``max_width`` pixels in at most ``max_lines`` lines, the last cut with "…"
    when more remains; a word wider than a line is broken, so nothing ever runs out of its cell."""
    words = text[:MAX_NARRATION_CHARS].split()
    cut_short = len(text) > MAX_NARRATION_CHARS
    lines: list[str] = []
    current = ""
    index = 0
    while index < len(words) and len(lines) < max_lines:
        word = words[index]
        candidate = f"{current} {word}" if current else word
        if _width(candidate, size) <= max_width:
            current, index = candidate, index + 1
            continue
        if not current:
            cut = _fitting_prefix(word, size, max_width)
            current, words[index] = word[:cut], word[cut:]
        lines.append(current)
        current = ""
    if current and len(lines) < max_lines:
        lines.append(current)
    if lines and (index < len(words) or cut_short):
        lines[-1] = _with_ellipsis(lines[-1], size, max_width)
    return lines


def _frame_cell_background(colour_index: int) -> Image.Image:
    """A frames-sheet cell: the badge right of the frame's box."""
    badge_left = FRAME_PADDING + FRAME_BOX[0] + 14
    badge = (badge_left, FRAME_PADDING, badge_left + 52, FRAME_PADDING + 36)
    return _card(colour_index, (FRAME_CELL_WIDTH, FRAME_CELL_HEIGHT), badge, 10)


def _missing_frame(colour_index: int, label: str) -> Image.Image:
    """The frame box of a segment with no readable frame: its colour and why, once per process."""
    cache: dict[tuple[int, str], Image.Image] = _local.__dict__.setdefault("missing_frames", {})
    key = (colour_index, label)
    if key not in cache:
        from PIL import Image, ImageDraw

        box = Image.new("RGB", FRAME_BOX, PALETTE[colour_index])
        _text(ImageDraw.Draw(box), (FRAME_BOX[0] / 2, FRAME_BOX[1] / 2), label, 17, (255, 255, 255), anchor="mm")
        cache[key] = box
    return cache[key]


def _fitted_frame(jpeg: bytes) -> Image.Image:
    """The frame scaled to fit ``FRAME_BOX`` keeping its shape. JPEG's DCT scaling (``draft``)
    decodes at 1/2, 1/4 or 1/8 size when that still covers the box, so a big frame costs little."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg), formats=("JPEG",)) as opened:
        width, height = opened.size
        if width <= 0 or height <= 0 or width * height > MAX_FRAME_PIXELS:
            raise ValueError(f"a {width}×{height} frame")
        scale = min(FRAME_BOX[0] / width, FRAME_BOX[1] / height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        opened.draft("RGB", size)
        frame = opened.convert("RGB")
    if frame.size == size:
        return frame
    return frame.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def draw_frames_sheet(sheet: FramesSheet) -> FramesDrawn:
    """JPEG bytes of the frames contact sheet: per segment its first frame (fitted, letterboxed in
    dark grey), number, clip length and narration (wrapped, cut with "…" to fit the cell). A frame
    that is missing or cannot be read leaves a coloured box, and its segment is named in ``unreadable``."""
    image, draw, columns = _canvas(
        sheet.title, sheet.segment_count, sheet.total_seconds, len(sheet.cells), (FRAME_CELL_WIDTH, FRAME_CELL_HEIGHT)
    )
    text_left = FRAME_PADDING + FRAME_BOX[0] + 14
    text_width = FRAME_CELL_WIDTH - text_left - 14
    narration_lines = (FRAME_CELL_HEIGHT - FRAME_PADDING - NARRATION_TOP) // NARRATION_LINE
    unreadable: list[int] = []
    for index, cell in enumerate(sheet.cells):
        left, top = frame_cell_origin(index, columns)
        colour_index = index % len(PALETTE)
        colour = PALETTE[colour_index]
        image.paste(_frame_cell_background(colour_index), (left, top))
        box_left, box_top, box_right, box_bottom = frame_box(index, columns)
        frame: Image.Image | None = None
        if cell.frame is not None:
            try:
                frame = _fitted_frame(cell.frame)
            except Exception:
                unreadable.append(cell.number)
        if frame is None:
            image.paste(
                _missing_frame(colour_index, "no clip" if cell.frame is None else "unreadable"), (box_left, box_top)
            )
        else:
            image.paste(FRAME_LETTERBOX, (box_left, box_top, box_right, box_bottom))
            image.paste(
                frame, (box_left + (FRAME_BOX[0] - frame.width) // 2, box_top + (FRAME_BOX[1] - frame.height) // 2)
            )
        badge_centre = (left + text_left + 26, top + FRAME_PADDING + 18)
        _text(draw, badge_centre, str(cell.number), 24, (255, 255, 255), anchor="mm")
        duration = f"{cell.duration_seconds} s"
        _text(draw, (left + FRAME_CELL_WIDTH - 14, top + FRAME_PADDING + 8), duration, 17, colour, anchor="ra")
        for line_number, line in enumerate(_wrap(cell.narration, NARRATION_SIZE, text_width, narration_lines)):
            xy = (left + text_left, top + NARRATION_TOP + line_number * NARRATION_LINE)
            _text(draw, xy, line, NARRATION_SIZE, (30, 30, 30))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return FramesDrawn(out.getvalue(), tuple(unreadable))


def render_frames_sheet(story: Story, frames: Sequence[bytes | None]) -> bytes:
    """The frames contact sheet drawn here, in the calling thread (tests, benchmarks)."""
    return draw_frames_sheet(frames_sheet_of(story, frames)).jpeg


# -- the worker processes -----------------------------------------------------------------------------

_workers: ProcessPoolExecutor | None = None
_workers_lock = threading.Lock()
_workers_drew = False  # whether the current pool has drawn a sheet yet
_pools_broken_before_drawing = 0
_threads_only = False
MAX_POOLS_BROKEN_BEFORE_DRAWING = 3


def storyboard_worker_count() -> int:
    """One worker per spare core, at least one: the event loop keeps a core for itself."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _pool() -> ProcessPoolExecutor:
    global _workers, _workers_drew
    with _workers_lock:
        if _workers is None:
            # forkserver, not fork: this process runs threads and an event loop, which a fork copies
            # in whatever state they are in. The preload makes each worker start in milliseconds.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            # A worker also imports the main module, which is why the ``reelwright`` script's module
            # (bot/__main__.py) imports nothing at the top.
            if context.get_start_method() == "forkserver":
                context.set_forkserver_preload([__name__, *PILLOW_MODULES])
            _workers = ProcessPoolExecutor(
                max_workers=storyboard_worker_count(), mp_context=context, initializer=exit_with_parent
            )
            _workers_drew = False
        return _workers


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool. Pools that break before drawing a single sheet mean workers cannot
    start here (a main module without an ``if __name__ == "__main__"`` guard, say): after a few,
    stop trying and draw in threads, rather than pay a failed start on every story."""
    global _workers, _pools_broken_before_drawing, _threads_only
    with _workers_lock:
        if _workers is pool:
            _workers = None
            _pools_broken_before_drawing = 0 if _workers_drew else _pools_broken_before_drawing + 1
            if _pools_broken_before_drawing >= MAX_POOLS_BROKEN_BEFORE_DRAWING and not _threads_only:
                _threads_only = True
                log.error(
                    "storyboard worker processes failed to start %d times; drawing in threads from now on",
                    _pools_broken_before_drawing,
                )
    pool.shutdown(wait=False, cancel_futures=True)


def _mark_drawn(pool: ProcessPoolExecutor) -> None:
    global _workers_drew
    with _workers_lock:
        if _workers is pool:
            _workers_drew = True


def shutdown_storyboard_workers() -> None:
    """Stop the worker processes (at shutdown); the next storyboard starts new ones."""
    global _workers, _pools_broken_before_drawing, _threads_only
    with _workers_lock:
        workers, _workers = _workers, None
        _pools_broken_before_drawing, _threads_only = 0, False
    if workers is not None:
        workers.shutdown(wait=True, cancel_futures=True)


def storyboard_worker_pids() -> list[int]:
    """The worker processes' ids, for benchmarks that count their CPU time."""
    with _workers_lock:
        processes = getattr(_workers, "_processes", None) or {}
        return list(processes)


Data = TypeVar("Data")
Drawn = TypeVar("Drawn")


async def _draw_in_worker(draw: Callable[[Data], Drawn], data: Data) -> Drawn:
    """``draw(data)`` in a worker process; in a thread when the pool breaks or cannot start."""
    if _threads_only:
        return await asyncio.to_thread(draw, data)
    loop = asyncio.get_running_loop()
    try:
        pool = _pool()
    except OSError:
        log.warning("could not start storyboard workers; drawing in a thread", exc_info=True)
        return await asyncio.to_thread(draw, data)
    try:
        drawn = await loop.run_in_executor(pool, draw, data)
    except BrokenProcessPool:
        log.warning("a storyboard worker died; drawing this one in a thread and starting new workers")
        _discard(pool)
        return await asyncio.to_thread(draw, data)
    _mark_drawn(pool)
    return drawn


async def draw_storyboard(story: Story) -> bytes:
    """The contact sheet's JPEG bytes, drawn in a worker process.

    Not in a thread: drawing holds the GIL for milliseconds at a time, and the event loop's thread
    gives the GIL up on every socket call and must then wait for it, up to the 5 ms switch interval
    each time. With storyboards drawn in a thread, 200 concurrent Discord /story commands spent
    about 1 s of their 3.7 s in ``socket.send`` alone (cProfile). If the pool breaks (a worker was
    killed) or cannot start, this sheet is drawn in a thread instead, so the reply is not lost,
    and the next one starts new workers (see ``_discard`` for when it stops trying).
    """
    return await _draw_in_worker(draw_sheet, sheet_of(story))


async def draw_frames(story: Story, frames: Sequence[bytes | None]) -> FramesDrawn:
    """The frames contact sheet, drawn in a worker process as ``draw_storyboard`` draws its sheet."""
    return await _draw_in_worker(draw_frames_sheet, frames_sheet_of(story, frames))


async def storyboard_or_none(story: Story) -> bytes | None:
    """The sheet, or None (logged) when it cannot be drawn: a storyboard decorates a story, and
    must never cost the creator the story itself. Adapters reach it through ``bot.core.delivery``."""
    if not story.segments:
        return None
    try:
        return await draw_storyboard(story)
    except Exception:
        log.exception("could not draw the storyboard of %r; sending the story without it", story.title[:80])
        return None


async def frames_sheet_or_none(story: Story, frames: Sequence[bytes | None]) -> bytes | None:
    """The sheet with each clip's first frame (``frames[i]`` for ``story.segments[i]``, None where a
    clip is missing), or None (logged) when it cannot be drawn: like the storyboard, it decorates
    a delivery and must never cost the creator the short itself."""
    if not story.segments:
        return None
    try:
        drawn = await draw_frames(story, frames)
    except Exception:
        log.exception("could not draw the frames sheet of %r; delivering without it", story.title[:80])
        return None
    if drawn.unreadable:
        log.warning(
            "the first frames of segment(s) %s of %r could not be read; drawn as coloured cells",
            ", ".join(map(str, drawn.unreadable)),
            story.title[:80],
        )
    return drawn.jpeg
