"""/schedule: admins subscribe a chat to daily trend posts (add, list, remove)."""

from __future__ import annotations

from bot.core.context import CommandContext
from bot.core.rendering import trend_blocks
from bot.core.replies import Reply
from connectors.errors import UserInputError
from services.schedules import ScheduleService, ScheduleView
from services.trends import TrendReport

USAGE = "Use /schedule add <niche> <HH:MM> <time zone>, /schedule list or /schedule remove <id>."


def schedule_line(view: ScheduleView) -> str:
    return f"#{view.id} · {view.niche} · every day at {view.time_of_day} ({view.timezone})"


async def schedule_command(service: ScheduleService, ctx: CommandContext) -> Reply:
    words = (ctx.args.get("request") or "list").split()
    action, rest = words[0].lower(), words[1:]
    platform, chat_id = ctx.chat.platform, ctx.chat.id
    if action == "list":
        views = await service.for_chat(platform, chat_id)
        if not views:
            return Reply(blocks=["This chat has no trend schedules. " + USAGE])
        return Reply(blocks=["🗓️ Trend posts for this chat:", *(schedule_line(v) for v in views)])
    if action == "add":
        if len(rest) < 3:
            raise UserInputError("Give a niche, a time and a time zone: /schedule add cooking 09:30 Europe/Berlin")
        niche, at, zone = " ".join(rest[:-2]), rest[-2], rest[-1]
        view = await service.add(platform, chat_id, niche, at, zone, ctx.user.key)
        return Reply(
            blocks=[f"🗓️ Scheduled {schedule_line(view)}. The first post comes at the next {view.time_of_day}."]
        )
    if action == "remove":
        if len(rest) != 1 or not rest[0].lstrip("#").isdigit():
            raise UserInputError("Which schedule? /schedule remove <id> (the number /schedule list shows).")
        await service.remove(platform, chat_id, int(rest[0].lstrip("#")))
        return Reply(blocks=[f"🗓️ Schedule #{rest[0].lstrip('#')} removed."])
    raise UserInputError(USAGE)


def trend_post(view: ScheduleView, report: TrendReport) -> Reply:
    return Reply(blocks=[f"🗓️ Daily trends for {view.niche}", *trend_blocks(report)[1:]])
