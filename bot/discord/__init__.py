"""The Discord adapter: slash commands derived from the core catalogue, served by discord.py."""
