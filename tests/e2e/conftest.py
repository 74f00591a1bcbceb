"""What the end-to-end tests share: the fakes in a process of their own, as a real upstream would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def sandbox() -> Iterator[dict[str, str]]:
    """The fakes in their own process, as a real upstream would be; videos take 4 s to render."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox", "--video-seconds", "4"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"NO_PROXY": "*"},
    )
    assert process.stdout is not None
    urls = json.loads(process.stdout.readline())
    yield urls
    process.terminate()
    process.wait(timeout=10)
