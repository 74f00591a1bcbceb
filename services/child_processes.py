"""What every worker process the bot starts needs (storyboard drawers, the video stitcher)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading


def exit_with_parent() -> None:
    """Run in a child process: end it when the bot process dies, even by SIGKILL, rather than leave
    an orphan waiting for work or encoding for nobody (multiprocessing keeps a pipe to the parent)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
