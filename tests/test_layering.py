"""The one rule between layers: bot → services → connectors, SDKs only in connectors,
no chat platform below bot. Checked with import-linter's contracts from pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_contracts_cover_the_sdks_and_platforms() -> None:
    """Guard against the contracts being weakened: they must name what they forbid."""
    config = (ROOT / "pyproject.toml").read_text()
    for forbidden in ('"openai"', '"google"', '"discord"', '"telegram"'):
        assert forbidden in config
    assert 'layers = ["bot", "services", "connectors"]' in config
