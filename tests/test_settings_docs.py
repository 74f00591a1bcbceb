"""The settings the bot reads, the settings the operator is shown, and the processes a deployment runs
must be the same: `.env.example`, docs/settings.md and the README's table are generated from the
settings class, and the Procfile runs real commands with real settings."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from bot import settings_docs
from bot.cli import main as cli_main
from connectors.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_files_are_current() -> None:
    stale = [str(path.relative_to(ROOT)) for path in settings_docs.stale_files()]
    assert not stale, f"{stale} differ from connectors/settings.py: run `python -m bot.settings_docs`"


def test_env_example_lists_every_setting_once() -> None:
    listed = re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", settings_docs.ENV_EXAMPLE.read_text(encoding="utf-8"), re.M)
    assert sorted(listed) == sorted(name.upper() for name in Settings.model_fields)


def test_every_setting_is_in_the_settings_doc_under_a_section() -> None:
    documented = [doc.name for _, docs in settings_docs.sections() for doc in docs]
    assert documented == [name.upper() for name in Settings.model_fields]
    text = settings_docs.SETTINGS_DOC.read_text(encoding="utf-8")
    for name in documented:
        assert f"| `{name}` |" in text


def test_a_setting_without_a_docstring_is_refused() -> None:
    with pytest.raises(ValueError, match="setting NEW_KNOB has no docstring"):
        settings_docs.describe("new_knob", FieldInfo(annotation=int, default=3))


def test_defaults_choices_and_ranges_come_from_the_class() -> None:
    docs = {doc.name: doc for _, section in settings_docs.sections() for doc in section}
    assert docs["TEXT_TIMEOUT_SECONDS"].default == "60" and "Range: > 0, ≤ 600." in docs["TEXT_TIMEOUT_SECONDS"].meaning
    assert docs["LOG_FORMAT"].meaning.endswith("One of: text, json.")
    assert docs["GENAI_ENTERPRISE"].default == "false"
    assert docs["OPENROUTER_API_KEY"].secret and not docs["OPENROUTER_BASE_URL"].secret


def test_the_copied_env_example_sets_nothing_but_empty_keys() -> None:
    assignments = [
        line for line in settings_docs.ENV_EXAMPLE.read_text(encoding="utf-8").splitlines() if re.match(r"^[A-Z]", line)
    ]
    assert assignments == [f"{name.upper()}=" for name in settings_docs.ASKED_FOR]


def test_the_readme_table_lists_the_settings_that_matter() -> None:
    readme = settings_docs.README.read_text(encoding="utf-8")
    table = readme.split(settings_docs.README_START)[1].split(settings_docs.README_END)[0]
    assert [row.split("`")[1] for row in table.strip().splitlines()[2:]] == [
        name.upper() for name in settings_docs.THAT_MATTER
    ]


def cli_commands(capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    choices = re.search(r"\{([a-z,]+)\}", capsys.readouterr().out)
    assert choices is not None
    return set(choices.group(1).split(","))


def test_the_procfile_runs_real_commands_with_real_settings(capsys: pytest.CaptureFixture[str]) -> None:
    processes = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines())
    assert set(processes) == {"bot", "web", "worker"}
    commands = cli_commands(capsys)
    for name, command in processes.items():
        words = shlex.split(command)
        assignments = [word for word in words if "=" in word]
        program, subcommand = words[len(assignments) :]
        assert program == "reelwright" and subcommand in commands, name
        for assignment in assignments:
            assert assignment.split("=")[0].lower() in Settings.model_fields, assignment
    assert processes["web"] == "TELEGRAM_WEBHOOK_PORT=$PORT reelwright run"
    assert processes["worker"] == "reelwright worker"
