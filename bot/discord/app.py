"""Reelwright on Discord: discord.py app commands derived from the core catalogue.

``serve_discord`` points discord.py at the configured REST and gateway URLs, logs in, syncs the
commands (globally, or to DISCORD_GUILD_IDS), registers the Discord ``ChatSender`` and serves until
``stop`` is set. Every interaction is deferred before anything else (Discord's 3-second rule), then
the chat core runs the command and the ``InteractionResponder`` edits the deferred response.
Invocations carry the guild, the member's role ids and an admin check (Manage Server) for the
core's guards. ``build_send_only_sender`` serves ``reelwright worker`` processes: REST only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import discord
import yarl
from discord import app_commands

from bot.core.commands import Command
from bot.core.context import ChatRef, IncomingImage, Invocation, UserRef
from bot.core.progress import ProgressPolicy
from bot.discord.buttons import ConfirmButton, StoryButton, reply_view
from bot.discord.messages import NO_MENTIONS
from bot.discord.registration import register_commands
from bot.discord.responder import DISCORD_PROGRESS, ChannelSender, InteractionResponder
from bot.runtime import PlatformStartError, Runtime
from connectors.errors import ReelwrightError, UserInputError
from connectors.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "discord"
#: On stop, commands already running get this long to deliver their answer before the client closes.
SHUTDOWN_GRACE_SECONDS = 10.0
#: discord.py dispatches "ready" (``is_ready``, hence /readyz) this long after the last GUILD_CREATE.
GUILD_READY_TIMEOUT = 2.0


def configure_endpoints(settings: Settings) -> None:
    """Point discord.py's REST and gateway at the configured URLs (class attributes, read at use)."""
    discord.http.Route.BASE = str(settings.discord_api_base_url).rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def guild_objects(settings: Settings) -> list[discord.Object]:
    """DISCORD_GUILD_IDS as guild objects (empty: sync globally)."""
    parts = [part.strip() for part in settings.discord_guild_ids.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise PlatformStartError(
            f"DISCORD_GUILD_IDS must be comma-separated guild ids, not {settings.discord_guild_ids!r}"
        )
    return [discord.Object(id=int(part)) for part in parts]


DISCORD_CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})


def cdn_origins(settings: Settings) -> frozenset[str]:
    """Where attachments may be fetched from: Discord's CDN, or the configured API host (a REST
    proxy or the tests' loopback Discord serves its CDN too). Nothing else, ever (no SSRF)."""
    api = yarl.URL(str(settings.discord_api_base_url))
    return DISCORD_CDN_HOSTS | {f"{api.host}:{api.port}"}


def _attachment_image(attachment: discord.Attachment, origins: frozenset[str]) -> IncomingImage:
    """The upload, fetched from the CDN only when the handler reads it, and never when its URL points
    anywhere but Discord's CDN. Its declared ``size`` is checked by the chat core before that."""

    async def stream() -> AsyncIterator[bytes]:
        url = yarl.URL(attachment.url)
        if url.host not in origins and f"{url.host}:{url.port}" not in origins:
            log.warning("refusing to fetch an attachment outside Discord's CDN: %s", url.host)
            raise UserInputError("That attachment does not come from Discord, so I will not fetch it.")
        yield await attachment.read()

    return IncomingImage(
        filename=attachment.filename, stream=stream, size=attachment.size, content_type=attachment.content_type
    )


class MalformedInteraction(app_commands.AppCommandError):
    """An interaction discord.py could not even parse into its command's options."""


class GuardedCommandTree(app_commands.CommandTree["ReelwrightDiscord"]):
    """A command tree whose every failure reaches ``tree.on_error``.

    discord.py builds an interaction's options before its error handling starts: a malformed
    value (an attachment option that is not an attachment id) raises a plain exception in its
    invoker task, and the user never gets an answer. ``interaction_check`` runs first, so it builds
    the same options (``Interaction.namespace``) and turns such a failure into
    ``MalformedInteraction``, which the tree hands to on_error.
    """

    async def interaction_check(self, interaction: discord.Interaction[ReelwrightDiscord], /) -> bool:
        try:
            interaction.namespace  # noqa: B018 (built and cached here, as the command will read it)
        except app_commands.AppCommandError:
            raise
        except Exception as exc:
            raise MalformedInteraction(f"{type(exc).__name__}: {exc}") from exc
        return True


def role_ids(user: discord.User | discord.Member) -> tuple[str, ...]:
    """The member's role ids as the interaction carried them (none outside a guild).

    Read from the interaction's member payload, not ``Member.roles``, which silently drops roles the
    guild cache does not hold (a guild still unavailable, a role event not yet seen): an allow-list
    must see exactly what Discord said.
    """
    if not isinstance(user, discord.Member):
        return ()
    return tuple(str(role_id) for role_id in user._roles)


def admin_check(interaction: discord.Interaction) -> Callable[[], Awaitable[bool]] | None:
    """Discord's part of the admin rule (``is_chat_admin``): members with Manage Server (or
    Administrator) in a guild. Outside a guild there is none: the user's own DM with the bot is a
    private chat, and in a group DM (reached as a user-installed app) nobody is an admin."""
    if interaction.guild_id is None:
        return None
    permissions = interaction.permissions

    async def is_admin() -> bool:
        return permissions.manage_guild or permissions.administrator

    return is_admin


def is_bot_dm(interaction: discord.Interaction) -> bool:
    """The user's own DM with the bot (not a guild channel, not a group DM)."""
    return interaction.guild_id is None and interaction.context.dm_channel


class DiscordBridge:
    """Turns interactions into core invocations, one final answer each."""

    def __init__(self, runtime: Runtime, sender: ChannelSender, progress: ProgressPolicy) -> None:
        self.runtime = runtime
        self.sender = sender
        self.progress = progress
        self.running: set[asyncio.Task[Any]] = set()
        self.cdn_origins = cdn_origins(runtime.settings)

    async def drain(self, grace: float) -> None:
        """Wait (at most ``grace`` seconds) for commands in flight, so a stop does not cut answers."""
        running = {task for task in self.running if task is not asyncio.current_task()}
        if running:
            log.info("waiting for %d Discord command(s) to finish", len(running))
            await asyncio.wait(running, timeout=grace)

    async def run_slash(self, interaction: discord.Interaction, command: Command, values: dict[str, Any]) -> None:
        await self.run_invocation(interaction, command.name, values)

    async def run_invocation(
        self,
        interaction: discord.Interaction,
        command: str,
        values: dict[str, Any],
        *,
        ephemeral: bool = False,
        after_defer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Defer (ephemerally if asked), run ``after_defer``, then run ``command`` through the core."""
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        if after_defer is not None:
            await after_defer()
        image: IncomingImage | None = None
        options: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, discord.Attachment):
                image = _attachment_image(value, self.cdn_origins)
            elif value is not None:
                options[name] = value
        user = interaction.user
        invocation = Invocation(
            command=command,
            user=UserRef(platform=PLATFORM, id=str(user.id), name=user.name),
            chat=ChatRef(platform=PLATFORM, id=str(interaction.channel_id), is_private=is_bot_dm(interaction)),
            options=options,
            image=image,
            is_admin=admin_check(interaction),
            guild_id=str(interaction.guild_id) if interaction.guild_id is not None else None,
            roles=role_ids(user),
            upload_limit=interaction.filesize_limit,
        )
        responder = InteractionResponder(interaction, self.sender, partial(reply_view, command), self.progress)
        await self.runtime.core.handle(invocation, responder)

    async def report_failure(self, interaction: discord.Interaction, error: BaseException) -> None:
        """Render a failure as a clear ephemeral message; never raises."""
        if isinstance(error, ReelwrightError):
            text = f"⚠️ {error.user_message}"
        elif isinstance(error, app_commands.CommandNotFound):
            text = "⚠️ That command is not available any more. Type / to see the current ones."
        elif isinstance(error, app_commands.CommandSignatureMismatch | MalformedInteraction):
            text = (
                "⚠️ Your Discord app sent this command in an older or unexpected shape. "
                "Reload Discord (Ctrl+R) and try again."
            )
        else:
            text = "⚠️ Something went wrong on my side. Please try again."
        if isinstance(error, app_commands.CommandSignatureMismatch | MalformedInteraction):
            log.warning("Discord interaction %s did not match its command: %r", interaction.id, error)
        else:
            log.error("Discord interaction %s failed: %r", interaction.id, error, exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.warning("could not tell the user about the failure of interaction %s", interaction.id)


def _quiet_voice_warnings() -> None:
    """Reelwright has no voice features: no start-up warnings about missing voice libraries."""
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


async def _login(client: discord.Client, settings: Settings) -> None:
    """Log in over REST (no gateway); a refusal or an unreachable Discord is a clear start error."""
    if settings.discord_bot_token is None:
        raise PlatformStartError("DISCORD_BOT_TOKEN is not set")
    try:
        await client.login(settings.discord_bot_token.get_secret_value())
    except discord.LoginFailure:
        raise PlatformStartError("Discord refused DISCORD_BOT_TOKEN (401 Unauthorized)") from None
    except discord.HTTPException as exc:
        raise PlatformStartError(f"Discord refused the start-up (HTTP {exc.status}): {exc.text}") from None
    except OSError as exc:
        raise PlatformStartError(f"Discord could not be reached at start: {type(exc).__name__}: {exc}") from None


async def build_send_only_sender(runtime: Runtime) -> ChannelSender:
    """A sender with no gateway connection, for ``reelwright worker`` processes that only deliver jobs.

    Its client only logs in (REST at DISCORD_API_BASE_URL: the bot user and the application, never
    the gateway) and posts by channel id; every message pings nobody. It is closed with the runtime.
    """
    configure_endpoints(runtime.settings)
    _quiet_voice_warnings()
    # No gateway, so intents subscribe to nothing; ``guilds`` only keeps discord.py's state quiet.
    client = discord.Client(intents=discord.Intents(guilds=True), allowed_mentions=NO_MENTIONS)
    try:
        await _login(client, runtime.settings)
    except BaseException:
        await client.close()
        raise
    runtime.stack.push_async_callback(client.close)
    return ChannelSender(client, ready=lambda: client.user is not None and not client.is_closed())


def _guarded(event: str, parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def guarded(data: Any) -> Any:
        try:
            return parse(data)
        except Exception:
            log.exception("dropped a malformed %s gateway event", event)
            return None

    return guarded


class ReelwrightDiscord(discord.Client):
    """The discord.py client: commands synced in ``setup_hook``, errors rendered in one handler."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        progress: ProgressPolicy = DISCORD_PROGRESS,
        guild_ready_timeout: float = GUILD_READY_TIMEOUT,
    ) -> None:
        _quiet_voice_warnings()
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=guild_ready_timeout,
        )
        self.runtime = runtime
        self.tree: app_commands.CommandTree[ReelwrightDiscord] = GuardedCommandTree(self)
        self.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]
        self.sender = ChannelSender(self)
        self.bridge = DiscordBridge(runtime, self.sender, progress)
        # discord.py has no hook for this: an exception in a gateway event parser (a payload missing
        # a field) escapes Client.connect and ends the bot, so every parser drops what it cannot read.
        parsers = self._connection.parsers
        for event, parse in list(parsers.items()):
            parsers[event] = _guarded(event, parse)

    async def setup_hook(self) -> None:
        guilds = guild_objects(self.runtime.settings)
        register_commands(self.tree, self.runtime.core.commands, self.bridge.run_slash, guilds or None)
        self.add_dynamic_items(StoryButton, ConfirmButton)
        if guilds:
            for guild in guilds:
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d Discord commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d Discord commands globally", len(synced))

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """tree.on_error: everything that escapes the core (which renders its own errors) ends here."""
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await self.bridge.report_failure(interaction, cause)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("Discord event %s failed", event_method)


async def serve_discord(
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    progress: ProgressPolicy = DISCORD_PROGRESS,
    guild_ready_timeout: float = GUILD_READY_TIMEOUT,
) -> None:
    """Log in, sync, serve until ``stop`` is set, then close cleanly.

    ``progress``: when progress lines are shown (tests show them at once).
    ``guild_ready_timeout``: discord.py's wait for late GUILD_CREATEs before it is ready (tests use 0).
    """
    settings = runtime.settings
    if settings.discord_bot_token is None:
        raise PlatformStartError("DISCORD_BOT_TOKEN is not set")
    configure_endpoints(settings)
    guild_objects(settings)  # a malformed DISCORD_GUILD_IDS stops the start here, with its name
    client = ReelwrightDiscord(runtime, progress=progress, guild_ready_timeout=guild_ready_timeout)
    try:
        await _login(client, settings)
        runtime.senders[PLATFORM] = client.sender
        connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        stopping = asyncio.create_task(stop.wait(), name="discord-stop")
        done, _ = await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connection in done:
            stopping.cancel()
            error = connection.exception()
            if error is not None:
                raise PlatformStartError(f"Discord gateway closed: {type(error).__name__}: {error}") from error
            return
        await client.bridge.drain(SHUTDOWN_GRACE_SECONDS)
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await connection
    finally:
        runtime.senders.pop(PLATFORM, None)
        if not client.is_closed():
            await client.close()
