"""Reelwright on Telegram (python-telegram-bot 22): updates in, chat-core invocations, replies out."""
