"""A loopback fake of the Telegram Bot API, for the real python-telegram-bot client.

It speaks the wire: ``POST /bot{token}/{method}`` with form-urlencoded or multipart bodies,
``{"ok": true, "result": ...}`` answers, Telegram's error JSON (``error_code``, ``description``,
``parameters.retry_after``), ``getUpdates`` long polling with an offset, ``getFile`` and
``GET /file/bot{token}/{path}``. Tests push updates, inject faults, and await the calls they expect
(no sleeps); the benchmark can make it enforce a flood limit of N messages per second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.sandbox.upstream import json_response
from tests.fakes.faults import Fault, InstrumentedUpstream, RecordedRequest
from tests.fakes.multipart import parse_form_data

BOT_ID = 7_000_000_001
BOT_USERNAME = "reelwright_test_bot"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
PHOTO_UPLOAD_LIMIT = 10 * 1024 * 1024
UPLOAD_LIMIT = 50 * 1024 * 1024
DOWNLOAD_LIMIT = 20 * 1024 * 1024
FILE_CHUNK = 64 * 1024
HANG_GUARD_SECONDS = 20.0
ADMIN_RIGHTS = (
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)
SEND_METHODS = frozenset({"sendMessage", "sendPhoto", "sendVideo", "sendDocument", "sendMediaGroup"})
#: What the flood limit counts: calls that post or change a message (chat actions are not messages).
RATE_LIMITED_METHODS = SEND_METHODS | {"editMessageText"}


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart call."""

    filename: str
    data: bytes = field(repr=False)
    content_type: str


@dataclass
class ApiCall:
    """One Bot API call as the fake received it; ``params`` are the raw form strings."""

    method: str
    params: dict[str, str]
    files: dict[str, Upload]
    time: float
    answered: dict[str, Any] | None = None

    @property
    def chat_id(self) -> int | None:
        raw = self.params.get("chat_id")
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None

    def json_param(self, name: str) -> Any:
        """A parameter PTB sent as a JSON string (lists, dicts), decoded."""
        raw = self.params.get(name)
        return json.loads(raw) if raw is not None else None


@dataclass
class StoredFile:
    """A file the bot may download: ``data``, then zeros up to ``served_size`` (made as they are sent,
    so a 200 MB file costs the test no memory)."""

    data: bytes = field(repr=False)
    file_size: int
    file_path: str
    served_size: int = 0

    def __post_init__(self) -> None:
        self.served_size = max(self.served_size, len(self.data))


class FakeTelegramAPI(InstrumentedUpstream):
    """The Bot API on 127.0.0.1: records every call, serves updates, files and faults.

    ``rate_limit`` (messages per second, sliding one-second window over ``RATE_LIMITED_METHODS``) makes it
    answer 429 with ``retry_after`` like Telegram's flood control; None never throttles.
    """

    root_path = "/bot"

    def __init__(
        self,
        token: str,
        *,
        rate_limit: float | None = None,
        record_uploads: bool = True,
        download_limit: int | None = DOWNLOAD_LIMIT,
    ) -> None:
        super().__init__(0.0)
        self.token = token
        #: getFile refuses files above this, like api.telegram.org; None plays a self-hosted server.
        self.download_limit = download_limit
        #: File bytes written to bot downloads so far (what a capped reader must keep small).
        self.bytes_served = 0
        self.rate_limit = rate_limit
        self.record_uploads = record_uploads
        self.calls: list[ApiCall] = []
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.commands: list[dict[str, Any]] = []
        self.throttled = 0
        self.confirmed_offset = 0
        self.last_update_id = 0
        self.admins: set[tuple[int, int]] = set()  # (chat id, user id) pairs getChatMember reports as admins
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._files: dict[str, StoredFile] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._sent_times: deque[float] = deque()
        self._changed = asyncio.Condition()
        self._method_faults: deque[tuple[str | None, Fault]] = deque()

    # -- what tests use ------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """TELEGRAM_API_BASE_URL for this fake (PTB appends the token)."""
        return f"{self.origin}/bot"

    @property
    def file_base(self) -> str:
        """TELEGRAM_FILE_BASE_URL for this fake."""
        return f"{self.origin}/file/bot"

    def inject_method_fault(self, fault: Fault, method: str | None = None) -> None:
        """Answer the next call of ``method`` (None = any but getUpdates) with a status fault."""
        self._method_faults.append((method, fault))

    def add_file(self, data: bytes, *, file_size: int | None = None, suffix: str = "jpg", padded_to: int = 0) -> str:
        """Store a file the bot may download; ``file_size`` may lie (e.g. to claim 25 MB);
        ``padded_to`` serves zeros after ``data`` up to that many bytes, generated lazily."""
        number = next(self._file_ids)
        file_id = f"file-{number}"
        # A path that never exists on local disk, or PTB would read the local file instead.
        stored = StoredFile(data, 0, f"fake/{number}.{suffix}", padded_to)
        stored.file_size = stored.served_size if file_size is None else file_size
        self._files[file_id] = stored
        return file_id

    def answer_with_local_path(self, file_id: str, path: str) -> None:
        """Play a Bot API server run with ``--local``: getFile answers this absolute path on disk."""
        self._files[file_id].file_path = path

    def photo(self, data: bytes, *, file_size: int | None = None) -> list[dict[str, Any]]:
        """A ``photo`` array (a small thumbnail first, the full size last) for ``data``."""
        small = self.add_file(data[:64], suffix="jpg")
        full = self.add_file(data, file_size=file_size, suffix="jpg")
        size = len(data) if file_size is None else file_size
        return [
            {"file_id": small, "file_unique_id": f"u-{small}", "width": 90, "height": 90, "file_size": min(size, 64)},
            {"file_id": full, "file_unique_id": f"u-{full}", "width": 800, "height": 800, "file_size": size},
        ]

    def document(
        self, data: bytes, filename: str, mime_type: str, *, file_size: int | None = None, padded_to: int = 0
    ) -> dict[str, Any]:
        file_id = self.add_file(data, file_size=file_size, suffix=filename.rsplit(".", 1)[-1], padded_to=padded_to)
        file_size = self._files[file_id].file_size
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_name": filename,
            "mime_type": mime_type,
            "file_size": len(data) if file_size is None else file_size,
        }

    def message(
        self,
        chat_id: int,
        text: str | None = None,
        *,
        user_id: int | None = None,
        chat_type: str = "private",
        caption: str | None = None,
        photo: list[dict[str, Any]] | None = None,
        document: dict[str, Any] | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A user's message dict with ``bot_command`` entities, stored so a later one can reply to it."""
        user = user_id if user_id is not None else chat_id
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type, **({"title": "group"} if chat_type != "private" else {})},
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
        }
        if text is not None:
            message["text"] = text
            message["entities"] = _command_entities(text)
        if caption is not None:
            message["caption"] = caption
            message["caption_entities"] = _command_entities(caption)
        if photo is not None:
            message["photo"] = photo
        if document is not None:
            message["document"] = document
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self._messages[(chat_id, message["message_id"])] = message
        return message

    async def push(self, message: dict[str, Any]) -> dict[str, Any]:
        """Queue an update carrying ``message`` for getUpdates; returns the update."""
        return (await self.push_many([message]))[0]

    async def push_many(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue one update per message at once (a burst of users); returns the updates."""
        updates = [{"update_id": next(self._update_ids), "message": message} for message in messages]
        async with self._changed:
            self.last_update_id = updates[-1]["update_id"]
            self._updates.extend(updates)
            self._changed.notify_all()
        return updates

    def on_call(self, call: ApiCall) -> None:
        """Hook for subclasses (the benchmark times replies here); called as each call is recorded."""

    async def send_command(self, chat_id: int, text: str, **kwargs: Any) -> dict[str, Any]:
        """Push a text message (usually a command) from ``chat_id``; returns the message."""
        message = self.message(chat_id, text, **kwargs)
        await self.push(message)
        return message

    async def press(self, message: dict[str, Any], data: str, *, user_id: int) -> dict[str, Any]:
        """A user presses an inline button of a bot ``message`` (a ``callback_query`` update)."""
        query = {
            "id": f"cq-{next(self._file_ids)}",
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            "chat_instance": "ci-1",
            "message": message,
            "data": data,
        }
        update = {"update_id": next(self._update_ids), "callback_query": query}
        async with self._changed:
            self.last_update_id = update["update_id"]
            self._updates.append(update)
            self._changed.notify_all()
        return update

    def bot_message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """A message the bot posted (as Telegram stores it now)."""
        return self._messages[(chat_id, message_id)]

    def update_for(self, message: dict[str, Any]) -> dict[str, Any]:
        """An update (with a fresh id) for webhook tests, not queued for getUpdates."""
        return {"update_id": next(self._update_ids), "message": message}

    def calls_of(self, method: str, chat_id: int | None = None) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method and (chat_id is None or c.chat_id == chat_id)]

    def sent_to(self, chat_id: int) -> list[ApiCall]:
        """Every call that posted or changed something in ``chat_id``, in order (chat actions excluded)."""
        return [c for c in self.calls if c.chat_id == chat_id and c.method != "sendChatAction"]

    async def wait_for(self, predicate: Callable[[list[ApiCall]], bool]) -> None:
        """Wait until ``predicate(calls)`` holds; the guard only turns a hang into a failure."""
        async with asyncio.timeout(HANG_GUARD_SECONDS), self._changed:
            await self._changed.wait_for(lambda: predicate(self.calls))

    async def wait_fetched(self, update_id: int) -> None:
        """Wait until the bot has confirmed ``update_id`` (a getUpdates with a higher offset): PTB has
        then put it on its update queue, so ``application.update_queue.join()`` covers it."""
        async with asyncio.timeout(HANG_GUARD_SECONDS), self._changed:
            await self._changed.wait_for(lambda: self.confirmed_offset > update_id)

    async def wait_for_call(self, method: str, chat_id: int | None = None, count: int = 1) -> list[ApiCall]:
        await self.wait_for(lambda _: len(self.calls_of(method, chat_id)) >= count)
        return self.calls_of(method, chat_id)

    # -- the wire ------------------------------------------------------------------------------------

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"ok": False, "error_code": code, "description": message}

    def _error(self, code: int, description: str, retry_after: float | None = None) -> web.Response:
        body = self.error_body(code, description)
        if retry_after is not None:
            body["parameters"] = {"retry_after": int(retry_after)}
        return json_response(body, code)

    def route_of(self, request: web.Request) -> str | None:
        parts = request.path.split("/")
        if request.path.startswith("/file/bot"):
            return "file"
        return parts[-1] if len(parts) >= 3 and parts[1].startswith("bot") else None

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        if request.path.startswith("/file/bot"):
            return await self._download(request)
        parts = request.path.split("/")
        if len(parts) != 3 or not parts[1].startswith("bot"):
            return self._error(404, "Not Found")
        if parts[1] != f"bot{self.token}":
            return self._error(401, "Unauthorized")
        method = parts[2]
        params, files = _parse_body(request.headers.get("Content-Type", ""), recorded.body)
        if not self.record_uploads:
            files = {name: Upload(u.filename, b"", u.content_type) for name, u in files.items()}
        call = ApiCall(method, params, files, time.monotonic())
        handler = getattr(self, f"_api_{method}", None)
        answer = self._fault_for(method) if handler is not None else None
        if answer is None and handler is None:
            answer = self._error(404, "Not Found: method not found")
        if answer is None and method in RATE_LIMITED_METHODS:
            answer = self._throttle()
        if answer is None and handler is not None:
            try:
                result = await handler(call)
            except _ApiError as exc:
                answer = self._error(exc.code, exc.description)
            else:
                call.answered = {"ok": True, "result": result}
                answer = json_response(call.answered)
        if method != "getUpdates":
            self.on_call(call)
            async with self._changed:
                self.calls.append(call)
                self._changed.notify_all()
        return answer  # type: ignore[return-value]

    def _fault_for(self, method: str) -> web.Response | None:
        if method == "getUpdates":
            return None
        for index, (scope, fault) in enumerate(self._method_faults):
            if scope is None or scope == method:
                del self._method_faults[index]
                return self._error(fault.code, fault.message, fault.retry_after)
        return None

    def _throttle(self) -> web.Response | None:
        if self.rate_limit is None:
            return None
        now = time.monotonic()
        while self._sent_times and now - self._sent_times[0] >= 1.0:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.rate_limit:
            self.throttled += 1
            return self._error(429, "Too Many Requests: retry after 1", retry_after=1)
        self._sent_times.append(now)
        return None

    async def _download(self, request: web.Request) -> web.StreamResponse:
        prefix = f"/file/bot{self.token}/"
        if not request.path.startswith(prefix):
            return self._error(401, "Unauthorized")
        wanted = request.path[len(prefix) :]
        stored = next((f for f in self._files.values() if f.file_path == wanted), None)
        if stored is None:
            return self._error(404, "Not Found")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = stored.served_size
        await response.prepare(request)
        try:
            await self._serve(response, stored.data)
            padding = stored.served_size - len(stored.data)
            zeros = bytes(min(padding, FILE_CHUNK))
            while padding > 0:
                await self._serve(response, zeros[:padding])
                padding -= len(zeros)
            await response.write_eof()
        except ConnectionError:
            pass  # the bot stopped reading: what a size cap does
        return response

    async def _serve(self, response: web.StreamResponse, chunk: bytes) -> None:
        await response.write(chunk)
        self.bytes_served += len(chunk)

    # -- methods ---------------------------------------------------------------------------------------

    async def _api_getMe(self, call: ApiCall) -> Any:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Reelwright",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_deleteWebhook(self, call: ApiCall) -> Any:
        self.webhook_url = None
        return True

    async def _api_setWebhook(self, call: ApiCall) -> Any:
        self.webhook_url = call.params.get("url")
        self.webhook_secret = call.params.get("secret_token")
        return True

    async def _api_setMyCommands(self, call: ApiCall) -> Any:
        self.commands = call.json_param("commands") or []
        return True

    async def _api_getUpdates(self, call: ApiCall) -> Any:
        offset = int(call.params.get("offset", "0") or 0)
        timeout = float(call.params.get("timeout", "0") or 0)
        limit = int(call.params.get("limit", "100") or 100)
        async with self._changed:
            if offset > self.confirmed_offset:
                self.confirmed_offset = offset
                self._changed.notify_all()
            if offset:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout > 0:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._updates)), timeout)
                except TimeoutError:
                    return []
            return self._updates[:limit]

    async def _api_sendChatAction(self, call: ApiCall) -> Any:
        self._require_chat(call)
        return True

    async def _api_sendMessage(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        text = call.params.get("text", "")
        _check_text(text, TEXT_LIMIT, "message text")
        _check_parse_mode(call)
        return self._bot_message(chat_id, text=text, reply_markup=call.json_param("reply_markup"))

    async def _api_editMessageText(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        text = call.params.get("text", "")
        _check_text(text, TEXT_LIMIT, "message text")
        _check_parse_mode(call)
        key = (chat_id, int(call.params.get("message_id", "0")))
        message = self._messages.get(key)
        if message is None or message["from"]["id"] != BOT_ID:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if message.get("text") == text:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message",
            )
        message["text"] = text
        message["edit_date"] = int(time.time())
        _set_markup(message, call)
        return message

    async def _api_editMessageReplyMarkup(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        message = self._messages.get((chat_id, int(call.params.get("message_id", "0"))))
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        _set_markup(message, call)
        return message

    async def _api_answerCallbackQuery(self, call: ApiCall) -> Any:
        return True

    async def _api_deleteMessage(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        if self._messages.pop((chat_id, int(call.params.get("message_id", "0"))), None) is None:
            raise _ApiError(400, "Bad Request: message to delete not found")
        return True

    async def _api_sendPhoto(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        upload = self._upload(call, "photo", PHOTO_UPLOAD_LIMIT)
        file_id = self.add_file(upload.data)
        photo = [{"file_id": file_id, "file_unique_id": f"u-{file_id}", "width": 800, "height": 600}]
        return self._bot_message(chat_id, photo=photo, caption=call.params.get("caption"))

    async def _api_sendVideo(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        upload = self._upload(call, "video", UPLOAD_LIMIT)
        file_id = self.add_file(upload.data, suffix="mp4")
        video = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "width": 720, "height": 1280, "duration": 8}
        return self._bot_message(chat_id, video=video, caption=call.params.get("caption"))

    async def _api_sendDocument(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        upload = self._upload(call, "document", UPLOAD_LIMIT)
        file_id = self.add_file(upload.data, suffix="bin")
        document = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_name": upload.filename}
        return self._bot_message(chat_id, document=document, caption=call.params.get("caption"))

    async def _api_getChatMember(self, call: ApiCall) -> Any:
        chat_id = self._require_chat(call)
        user_id = int(call.params.get("user_id", "0"))
        status = "administrator" if (chat_id, user_id) in self.admins else "member"
        member: dict[str, Any] = {"status": status, "user": {"id": user_id, "is_bot": False, "first_name": "u"}}
        if status == "administrator":
            member.update({"can_be_edited": False, "is_anonymous": False, "can_manage_chat": True})
            member.update(dict.fromkeys(ADMIN_RIGHTS, True))
        return member

    async def _api_getFile(self, call: ApiCall) -> Any:
        file_id = call.params.get("file_id", "")
        stored = self._files.get(file_id)
        if stored is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        if self.download_limit is not None and stored.file_size > self.download_limit:
            raise _ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    # -- plumbing ----------------------------------------------------------------------------------

    def _require_chat(self, call: ApiCall) -> int:
        chat_id = call.chat_id
        if chat_id is None:
            raise _ApiError(400, "Bad Request: chat not found")
        return chat_id

    def _upload(self, call: ApiCall, name: str, limit: int) -> Upload:
        caption = call.params.get("caption")
        if caption is not None:
            _check_text(caption, CAPTION_LIMIT, "message caption", allow_empty=True)
        _check_parse_mode(call)
        upload = call.files.get(name)
        if upload is None:
            if name in call.params:  # a file_id or URL: this fake only takes uploads
                return Upload(name, b"", "application/octet-stream")
            raise _ApiError(400, f"Bad Request: there is no {name} in the request")
        if len(upload.data) > limit:
            raise _ApiError(413, "Request Entity Too Large")
        return upload

    def _bot_message(self, chat_id: int, **content: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Reelwright", "username": BOT_USERNAME},
        }
        message.update({key: value for key, value in content.items() if value is not None})
        self._messages[(chat_id, message["message_id"])] = message
        return message


class _ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def _command_entities(text: str) -> list[dict[str, Any]]:
    if not text.startswith("/"):
        return []
    length = len(text.split(maxsplit=1)[0]) if text.strip() else 0
    return [{"type": "bot_command", "offset": 0, "length": length}]


def _check_text(text: str, limit: int, what: str, *, allow_empty: bool = False) -> None:
    if not text.strip() and not allow_empty:
        raise _ApiError(400, f"Bad Request: {what} is empty")
    # Telegram counts UTF-16 code units after entity parsing; plain text makes that the string.
    if len(text.encode("utf-16-le")) // 2 > limit:
        raise _ApiError(400, f"Bad Request: {what} is too long")


def _set_markup(message: dict[str, Any], call: ApiCall) -> None:
    """An edit replaces the inline keyboard; one without ``reply_markup`` removes it."""
    markup = call.json_param("reply_markup")
    if markup:
        message["reply_markup"] = markup
    else:
        message.pop("reply_markup", None)


def _check_parse_mode(call: ApiCall) -> None:
    """Telegram rejects unbalanced markup; this fake only accepts plain text, the adapter's choice."""
    mode = call.params.get("parse_mode")
    if mode:
        raise _ApiError(400, f"Bad Request: can't parse entities in {mode} (the fake only takes plain text)")


def _parse_body(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, Upload]]:
    """Form fields and file parts of a urlencoded or multipart body."""
    params: dict[str, str] = {}
    files: dict[str, Upload] = {}
    if content_type.startswith("multipart/"):
        for part in parse_form_data(content_type, body):
            if not part.name:
                continue
            if part.filename is not None:
                files[part.name] = Upload(part.filename, part.data, part.content_type)
            else:
                params[part.name] = part.data.decode()
    elif body:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    return params, files
