"""``python -m bot`` and the ``reelwright`` script.

Kept import-light on purpose: a worker process (the storyboard drawers) imports the main module
again when it starts, and the whole bot takes about 1.5 s and 100+ MB to import.
"""

from __future__ import annotations


def main() -> None:
    from bot.cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
