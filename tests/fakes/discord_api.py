"""A loopback Discord for the real discord.py client: REST (under ``Route.BASE``), the gateway
websocket and an attachment CDN, all on one aiohttp server on 127.0.0.1.

It records every REST call (multipart bodies parsed into ``payload`` and ``files``), remembers the
commands the bot synced so that ``slash()`` can build correctly typed options from them, dispatches
``INTERACTION_CREATE`` over the gateway, and takes faults from the same FIFO as the AI fakes
(a 429 is answered the way Discord does: ``Via`` header plus ``retry_after`` in the body).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.sandbox.upstream import json_response
from tests.fakes.faults import Fault, InstrumentedUpstream, RecordedRequest
from tests.fakes.multipart import parse_form_data

__all__ = ["DiscordCall", "FakeDiscord", "Fault", "UploadedFile"]

OPTION_TYPES = {"string": 3, "integer": 4, "attachment": 11}
CHANNEL_TEXT = 0
CHANNEL_DM = 1
CONTEXT_BOT_DM = 1
INTERACTION_COMMAND = 2
INTERACTION_COMPONENT = 3
ALL_PERMISSIONS = str((1 << 50) - 1)
#: Everything a plain member has, without Administrator (1 << 3) and Manage Server (1 << 5).
MEMBER_PERMISSIONS = str(((1 << 50) - 1) & ~(1 << 3) & ~(1 << 5))
EPOCH_MS = 1420070400000
WAIT_LIMIT_SECONDS = 10.0
#: Interaction and webhook routes are authorised by the interaction token in the path, not the bot token.
WEBHOOK_ROUTES = frozenset({"callback", "edit_original", "followup", "delete_original", "webhook_message"})


@dataclass
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    name: str
    filename: str
    data: bytes = field(repr=False)
    content_type: str


@dataclass
class DiscordCall:
    """A REST call as the bot made it: method, route name, path, JSON payload and uploaded files."""

    method: str
    route: str
    path: str
    query: dict[str, str]
    payload: Any
    files: list[UploadedFile]
    time: float
    content_type: str
    message: dict[str, Any] | None = None
    status: int = 200

    @property
    def text(self) -> str:
        """Every piece of text the call carries (content and embeds), for assertions."""
        return json.dumps(self.payload, ensure_ascii=False) if self.payload is not None else ""


def _snowflake(counter: itertools.count[int], age_seconds: float = 0.0) -> str:
    """A snowflake id whose timestamp is ``age_seconds`` ago (discord.py derives created_at from it)."""
    return str(((int((time.time() - age_seconds) * 1000) - EPOCH_MS) << 22) + next(counter))


def _parse_multipart(content_type: str, body: bytes) -> tuple[Any, list[UploadedFile]]:
    """``payload_json`` and ``files[n]`` of a multipart/form-data body."""
    payload: Any = None
    files: list[UploadedFile] = []
    for part in parse_form_data(content_type, body):
        if part.name == "payload_json":
            payload = json.loads(part.data)
        else:
            files.append(
                UploadedFile(
                    name=part.name, filename=part.filename or "", data=part.data, content_type=part.content_type
                )
            )
    return payload, files


class FakeDiscord(InstrumentedUpstream):
    """Discord's REST API, gateway and CDN for one bot, one guild and one text channel."""

    root_path = "/api/v10"

    def __init__(self, token: str = "fake-discord-token.A1b2C3.secretpart", *, attachment_size_limit: int = 10 << 20):
        super().__init__()
        self.token = token
        self.attachment_size_limit = attachment_size_limit
        self._ids = itertools.count(1)
        self.application_id = "1100000000000000001"
        self.bot_user = {
            "id": self.application_id,
            "username": "Reelwright",
            "discriminator": "0",
            "global_name": "Reelwright",
            "avatar": None,
            "bot": True,
        }
        self.guild_id = "1200000000000000001"
        self.channel_id = "1300000000000000001"
        self.user = {
            "id": "1400000000000000001",
            "username": "creator",
            "discriminator": "0",
            "global_name": "Creator",
            "avatar": None,
        }
        self.calls: list[DiscordCall] = []
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}
        #: Attachment bytes the CDN sent (zero when every upload was refused by its declared size).
        self.cdn_bytes_served = 0
        self.messages: dict[str, dict[str, Any]] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.identified = asyncio.Event()
        self._sequence = 0
        self._changed = asyncio.Condition()
        #: Called with every recorded call (a benchmark measures latencies here).
        self.listeners: list[Callable[[DiscordCall], None]] = []
        #: Every interaction dispatched, by token (the messages answering it carry its metadata).
        self.interactions: dict[str, dict[str, Any]] = {}

    # -- what tests use ------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return self.base_url

    @property
    def gateway_url(self) -> str:
        return self.origin.replace("http://", "ws://") + "/gateway"

    def calls_to(self, route: str) -> list[DiscordCall]:
        return [call for call in self.calls if call.route == route]

    async def wait_for(self, predicate: Callable[[DiscordCall], bool]) -> DiscordCall:
        """The first recorded call matching ``predicate``, waiting for it (a hang fails after 10 s)."""
        async with asyncio.timeout(WAIT_LIMIT_SECONDS), self._changed:
            while True:
                for call in self.calls:
                    if predicate(call):
                        return call
                await self._changed.wait()

    def add_attachment(
        self, filename: str, data: bytes, content_type: str = "image/png", *, size: int | None = None
    ) -> dict[str, Any]:
        """Host ``data`` on the CDN and return the ``resolved.attachments`` entry for it; ``size`` is
        what Discord declares (``len(data)`` unless given: a 200 MB upload need not be allocated)."""
        attachment_id = _snowflake(self._ids)
        path = f"/attachments/{self.channel_id}/{attachment_id}/{filename}"
        self.cdn[path] = (data, content_type)
        url = f"{self.origin}{path}"
        return {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        attachments: dict[str, dict[str, Any]] | None = None,
        attachment_size_limit: int | None = None,
        user: dict[str, Any] | None = None,
        age_seconds: float = 0.0,
        member: dict[str, Any] | None = None,
        dm: bool = False,
    ) -> dict[str, Any]:
        """Dispatch a slash command with options typed from the synced declaration; returns ``d``.

        ``member`` overrides fields of the member payload (``roles``, ``permissions``); ``dm`` sends
        it from the user's DM with the bot (no guild, no member)."""
        scope, declared = self._declared(name)
        by_name = {opt["name"]: opt for opt in declared.get("options", [])}
        payload_options: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {}
        for key, value in (options or {}).items():
            payload_options.append({"name": key, "type": by_name[key]["type"], "value": value})
        for key, attachment in (attachments or {}).items():
            payload_options.append({"name": key, "type": OPTION_TYPES["attachment"], "value": attachment["id"]})
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
        data: dict[str, Any] = {"id": declared["id"], "name": name, "type": 1, "options": payload_options}
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = scope
        d = self.interaction_payload(
            INTERACTION_COMMAND,
            data,
            attachment_size_limit=attachment_size_limit,
            user=user,
            age_seconds=age_seconds,
            member=member,
            dm=dm,
        )
        await self.dispatch_event("INTERACTION_CREATE", d)
        return d

    async def press(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        user: dict[str, Any] | None = None,
        member: dict[str, Any] | None = None,
        attachment_size_limit: int | None = None,
    ) -> dict[str, Any]:
        """Dispatch a button press on ``message`` (a message object the bot posted), by ``user``."""
        data = {"custom_id": custom_id, "component_type": 2}
        d = self.interaction_payload(
            INTERACTION_COMPONENT, data, user=user, member=member, attachment_size_limit=attachment_size_limit
        )
        d["message"] = message
        await self.dispatch_event("INTERACTION_CREATE", d)
        return d

    def interaction_payload(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        attachment_size_limit: int | None = None,
        user: dict[str, Any] | None = None,
        age_seconds: float = 0.0,
        member: dict[str, Any] | None = None,
        dm: bool = False,
    ) -> dict[str, Any]:
        """A complete ``INTERACTION_CREATE`` ``d`` (every field discord.py reads without a default)."""
        interaction_id = _snowflake(self._ids, age_seconds)
        member_user = user or self.user
        d = self._interaction_payload(interaction_id, kind, data, attachment_size_limit, member_user)
        if member:
            d["member"].update(member)
        if dm:
            del d["guild_id"], d["member"]
            d["user"] = member_user
            d["channel"] = {"id": self.channel_id, "type": CHANNEL_DM, "recipients": [member_user], "flags": 0}
            d["authorizing_integration_owners"] = {"1": member_user["id"]}
            d["context"] = CONTEXT_BOT_DM
        self.interactions[d["token"]] = d
        return d

    def _interaction_payload(
        self,
        interaction_id: str,
        kind: int,
        data: dict[str, Any],
        attachment_size_limit: int | None,
        member_user: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": kind,
            "token": f"itoken-{interaction_id}",
            "version": 1,
            "attachment_size_limit": attachment_size_limit or self.attachment_size_limit,
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "channel": self.channel_payload(),
            "member": {
                "user": member_user,
                "roles": [],
                "flags": 0,
                "joined_at": "2026-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "permissions": ALL_PERMISSIONS,
            },
            "app_permissions": ALL_PERMISSIONS,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "context": 0,
            "data": data,
        }

    async def dispatch_event(self, event: str, d: Any) -> None:
        """Send one gateway dispatch (op 0) to every connected client."""
        self._sequence += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._sequence, "d": d})
        for socket in list(self.sockets):
            if not socket.closed:
                await socket.send_str(frame)

    def channel_payload(self) -> dict[str, Any]:
        return {
            "id": self.channel_id,
            "type": CHANNEL_TEXT,
            "guild_id": self.guild_id,
            "name": "creators",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    # -- REST ------------------------------------------------------------------------------------------

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"message": message, "code": 0}

    def route_of(self, request: web.Request) -> str | None:
        parts = request.path.split("/")
        path = request.path
        if path == "/gateway":
            return "gateway"
        if path.startswith("/attachments/"):
            return "cdn"
        if not path.startswith(self.root_path):
            return None
        rest = parts[3:]
        if rest[:1] == ["interactions"] and rest[-1:] == ["callback"]:
            return "callback"
        if rest[:1] == ["webhooks"]:
            if rest[-2:] == ["messages", "@original"]:
                return {"PATCH": "edit_original", "DELETE": "delete_original", "GET": "get_original"}.get(
                    request.method, "original"
                )
            return "followup" if len(rest) == 3 else "webhook_message"
        if rest[:1] == ["channels"] and rest[-1:] == ["messages"]:
            return "channel_message"
        if rest[:1] == ["channels"] and rest[2:3] == ["messages"] and len(rest) == 4 and request.method == "PATCH":
            return "edit_message"
        if rest[:1] == ["applications"] and rest[-1:] == ["commands"]:
            return "sync_guild" if "guilds" in rest else "sync_global"
        return "/".join(rest)

    async def dispatch(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        route = recorded.route
        if route == "gateway":
            return await self._gateway(request)
        if route == "cdn":
            stored = self.cdn.get(request.path)
            if stored is None:
                return web.Response(status=404)
            self.cdn_bytes_served += len(stored[0])
            return web.Response(body=stored[0], content_type=stored[1])
        content_type = request.headers.get("Content-Type", "")
        payload, files = recorded.json, []
        if content_type.startswith("multipart/"):
            payload, files = _parse_multipart(content_type, recorded.body)
        call = DiscordCall(
            method=request.method,
            route=route or "",
            path=request.path,
            query=recorded.query,
            payload=payload,
            files=files,
            time=recorded.time,
            content_type=content_type,
        )
        fault = self.take_fault(route)
        if fault is not None and fault.kind == "status":
            call.status = fault.code
            await self._record(call)
            return self._fault_response(fault)
        if route not in WEBHOOK_ROUTES and request.headers.get("Authorization") != f"Bot {self.token}":
            call.status = 401
            await self._record(call)
            return json_response({"message": "401: Unauthorized", "code": 0}, 401)
        response = self._answer(request, call)
        await self._record(call)
        return response

    async def _record(self, call: DiscordCall) -> None:
        for listener in self.listeners:
            listener(call)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _fault_response(self, fault: Fault) -> web.Response:
        if fault.code == 429:
            retry_after = fault.retry_after or 0.0
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, int(retry_after))),
                "X-RateLimit-Scope": "user",
            }
            return json_response(body, 429, headers)
        return json_response(fault.body or {"message": fault.message, "code": 0}, fault.code)

    def _declared(self, name: str) -> tuple[str | None, dict[str, Any]]:
        for scope, commands in self.commands.items():
            for command in commands:
                if command["name"] == name:
                    return scope, command
        raise KeyError(f"/{name} was never synced")

    def _message(self, payload: Any, files: list[UploadedFile], message_id: str | None = None) -> dict[str, Any]:
        body = payload if isinstance(payload, dict) else {}
        attachments = []
        for index, upload in enumerate(files):
            attachments.append(
                {
                    "id": _snowflake(self._ids),
                    "filename": upload.filename,
                    "size": len(upload.data),
                    "url": f"{self.origin}/attachments/{self.channel_id}/{index}/{upload.filename}",
                    "proxy_url": f"{self.origin}/attachments/{self.channel_id}/{index}/{upload.filename}",
                    "content_type": upload.content_type,
                }
            )
        message = {
            "id": message_id or _snowflake(self._ids),
            "channel_id": self.channel_id,
            "guild_id": self.guild_id,
            "type": 0,
            "content": body.get("content") or "",
            "author": self.bot_user,
            "embeds": body.get("embeds") or [],
            "attachments": attachments,
            "components": body.get("components") or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": "2026-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": body.get("flags") or 0,
            "webhook_id": self.application_id,
            "application_id": self.application_id,
        }
        self.messages[message["id"]] = message
        return message

    def _answer(self, request: web.Request, call: DiscordCall) -> web.StreamResponse:
        route = call.route
        if route == "users/@me":
            return json_response(self.bot_user)
        if route == "oauth2/applications/@me":
            return json_response(
                {
                    "id": self.application_id,
                    "name": "Reelwright",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": self.user,
                    "verify_key": "0" * 64,
                    "flags": 0,
                    "interactions_endpoint_url": None,
                    "team": None,
                }
            )
        if route == "gateway" or route == "gateway/bot":
            return json_response({"url": self.gateway_url, "shards": 1})
        if route in ("sync_global", "sync_guild"):
            scope = request.path.split("/")[6] if route == "sync_guild" else None
            echoed = []
            for command in call.payload or []:
                echoed.append(
                    {
                        **command,
                        "id": _snowflake(self._ids),
                        "application_id": self.application_id,
                        "version": _snowflake(self._ids),
                        **({"guild_id": scope} if scope else {}),
                    }
                )
            self.commands[scope] = echoed
            return json_response(echoed)
        if route == "callback":
            interaction_id = request.path.split("/")[4]
            payload = call.payload or {}
            kind = payload.get("type")
            interaction: dict[str, Any] = {"id": interaction_id, "type": INTERACTION_COMMAND}
            resource: dict[str, Any] = {"type": kind}
            if kind == 5:
                interaction["response_message_loading"] = True
                interaction["response_message_ephemeral"] = bool((payload.get("data") or {}).get("flags", 0) & 64)
            elif kind in (4, 7):
                message = self._message(payload.get("data"), call.files)
                interaction["response_message_id"] = message["id"]
                interaction["response_message_ephemeral"] = bool(message["flags"] & 64)
                resource["message"] = message
            return json_response({"interaction": interaction, "resource": resource})
        if route in ("edit_original", "followup", "channel_message"):
            call.message = self._message(call.payload, call.files)
            answered = self.interactions.get(request.path.split("/")[5]) if route != "channel_message" else None
            if answered is not None:
                # Like Discord: a message answering an interaction says whose interaction it was.
                call.message["interaction_metadata"] = {
                    "id": answered["id"],
                    "type": answered["type"],
                    "user": answered.get("member", {}).get("user") or answered.get("user"),
                    "authorizing_integration_owners": answered["authorizing_integration_owners"],
                }
            return json_response(call.message)
        if route == "edit_message":
            stored = self.messages.get(request.path.split("/")[-1])
            if stored is None:
                return json_response({"message": "Unknown Message", "code": 10008}, 404)
            body = call.payload if isinstance(call.payload, dict) else {}
            stored.update({key: body[key] for key in ("content", "embeds", "components", "flags") if key in body})
            call.message = stored
            return json_response(stored)
        if route == "delete_original":
            return web.Response(status=204)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    # -- gateway ---------------------------------------------------------------------------------------

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": self.bot_user,
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "guilds": [{"id": self.guild_id, "unavailable": True}],
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    def _guild(self) -> dict[str, Any]:
        return {
            "id": self.guild_id,
            "name": "Creators",
            "unavailable": False,
            "owner_id": self.user["id"],
            "member_count": 2,
            "large": False,
            "members": [
                {"user": self.bot_user, "roles": [], "flags": 0, "joined_at": "2026-01-01T00:00:00+00:00"},
            ],
            "channels": [self.channel_payload()],
            "roles": [
                {
                    "id": self.guild_id,
                    "name": "@everyone",
                    "permissions": ALL_PERMISSIONS,
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "premium_tier": 0,
            "joined_at": "2026-01-01T00:00:00+00:00",
        }

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(max_msg_size=0)
        await socket.prepare(request)
        self.sockets.append(socket)
        await socket.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if frame.get("op") == 1:
                    await socket.send_str(json.dumps({"op": 11}))
                elif frame.get("op") == 2:
                    if (frame.get("d") or {}).get("token") != self.token:
                        await socket.close(code=4004, message=b"Authentication failed.")
                        break
                    await self.dispatch_event("READY", self._ready())
                    await self.dispatch_event("GUILD_CREATE", self._guild())
                    self.identified.set()
        finally:
            self.sockets.remove(socket)
        return socket
