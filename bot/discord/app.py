"""Reelwright on Discord: discord.py app commands derived from the core catalogue.

``serve_discord`` points discord.py at the configured REST and gateway URLs, logs in, syncs the
commands (globally, or to DISCORD_GUILD_IDS), registers the Discord ``ChatSender`` and serves until
``stop`` is set. Every interaction is deferred before anything else (Discord's 3-second rule), then
the chat core runs the command and the ``InteractionResponder`` edits the deferred response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import discord
import yarl
from discord import app_commands

from bot.core.commands import Command
from bot.core.context import ChatRef, IncomingImage, Invocation, UserRef
from bot.discord.buttons import StoryButton, story_view
from bot.discord.messages import NO_MENTIONS
from bot.discord.registration import register_commands
from bot.discord.responder import PROGRESS_AFTER_SECONDS, ChannelSender, InteractionResponder
from bot.runtime import PlatformStartError, Runtime
from connectors.errors import ReelwrightError, UserInputError
from connectors.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "discord"
#: On stop, commands already running get this long to deliver their answer before the client closes.
SHUTDOWN_GRACE_SECONDS = 10.0


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


def _attachment_image(attachment: discord.Attachment, max_bytes: int) -> IncomingImage:
    """The upload, downloaded from the CDN only when the handler reads it, and never when too big."""

    async def read() -> bytes:
        if attachment.size > max_bytes:
            raise UserInputError(
                f"The image is {attachment.size / 1048576:.1f} MB; the limit is {max_bytes / 1048576:.1f} MB."
            )
        return await attachment.read()

    return IncomingImage(
        filename=attachment.filename, read=read, size=attachment.size, content_type=attachment.content_type
    )


class DiscordBridge:
    """Turns interactions into core invocations, one final answer each."""

    def __init__(self, runtime: Runtime, sender: ChannelSender, progress_after: float) -> None:
        self.runtime = runtime
        self.sender = sender
        self.progress_after = progress_after
        self.running: set[asyncio.Task[Any]] = set()

    async def drain(self, grace: float) -> None:
        """Wait (at most ``grace`` seconds) for commands in flight, so a stop does not cut answers."""
        running = {task for task in self.running if task is not asyncio.current_task()}
        if running:
            log.info("waiting for %d Discord command(s) to finish", len(running))
            await asyncio.wait(running, timeout=grace)

    async def run_slash(self, interaction: discord.Interaction, command: Command, values: dict[str, Any]) -> None:
        await self.run_invocation(interaction, command.name, values)

    async def run_invocation(self, interaction: discord.Interaction, command: str, values: dict[str, Any]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        await interaction.response.defer(thinking=True)
        image: IncomingImage | None = None
        options: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, discord.Attachment):
                image = _attachment_image(value, self.runtime.settings.max_image_bytes)
            elif value is not None:
                options[name] = value
        user = interaction.user
        invocation = Invocation(
            command=command,
            user=UserRef(platform=PLATFORM, id=str(user.id), name=user.name),
            chat=ChatRef(platform=PLATFORM, id=str(interaction.channel_id), is_private=interaction.guild_id is None),
            options=options,
            image=image,
        )
        responder = InteractionResponder(interaction, self.sender, partial(story_view, command), self.progress_after)
        await self.runtime.core.handle(invocation, responder)

    async def report_failure(self, interaction: discord.Interaction, error: BaseException) -> None:
        """Render a failure as a clear ephemeral message; never raises."""
        if isinstance(error, ReelwrightError):
            text = f"⚠️ {error.user_message}"
        elif isinstance(error, app_commands.CommandNotFound):
            text = "⚠️ That command is not available any more. Type / to see the current ones."
        else:
            text = "⚠️ Something went wrong on my side. Please try again."
        log.error("Discord interaction %s failed: %r", interaction.id, error, exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.warning("could not tell the user about the failure of interaction %s", interaction.id)


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

    def __init__(self, runtime: Runtime, *, progress_after: float = PROGRESS_AFTER_SECONDS) -> None:
        # Reelwright has no voice features: no start-up warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(intents=discord.Intents(guilds=True), allowed_mentions=NO_MENTIONS)
        self.runtime = runtime
        self.tree: app_commands.CommandTree[ReelwrightDiscord] = app_commands.CommandTree(self)
        self.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]
        self.sender = ChannelSender(self)
        self.bridge = DiscordBridge(runtime, self.sender, progress_after)
        # discord.py has no hook for this: an exception in a gateway event parser (a payload missing
        # a field) escapes Client.connect and ends the bot, so every parser drops what it cannot read.
        parsers = self._connection.parsers
        for event, parse in list(parsers.items()):
            parsers[event] = _guarded(event, parse)

    async def setup_hook(self) -> None:
        guilds = guild_objects(self.runtime.settings)
        register_commands(self.tree, self.runtime.core.commands, self.bridge.run_slash, guilds or None)
        self.add_dynamic_items(StoryButton)
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
    runtime: Runtime, stop: asyncio.Event, *, progress_after: float = PROGRESS_AFTER_SECONDS
) -> None:
    """Log in, sync, serve until ``stop`` is set, then close cleanly.

    ``progress_after``: seconds a command runs before its progress lines are shown (tests use 0).
    """
    settings = runtime.settings
    if settings.discord_bot_token is None:
        raise PlatformStartError("DISCORD_BOT_TOKEN is not set")
    configure_endpoints(settings)
    guild_objects(settings)  # a malformed DISCORD_GUILD_IDS stops the start here, with its name
    client = ReelwrightDiscord(runtime, progress_after=progress_after)
    try:
        try:
            await client.login(settings.discord_bot_token.get_secret_value())
        except discord.LoginFailure:
            raise PlatformStartError("Discord refused DISCORD_BOT_TOKEN (401 Unauthorized)") from None
        except discord.HTTPException as exc:
            raise PlatformStartError(f"Discord refused the start-up (HTTP {exc.status}): {exc.text}") from None
        except OSError as exc:
            raise PlatformStartError(f"Discord could not be reached at start: {type(exc).__name__}: {exc}") from None
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
