"""Instance ids: stable across restarts, never held by two live processes at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from services.instance import claim_instance_id


def test_two_live_holders_of_one_id_get_different_ids(tmp_path: Path) -> None:
    first = claim_instance_id("host:worker", tmp_path)
    second = claim_instance_id("host:worker", tmp_path)
    third = claim_instance_id("host:worker", tmp_path)
    try:
        assert (first.instance_id, second.instance_id, third.instance_id) == (
            "host:worker",
            "host:worker#2",
            "host:worker#3",
        )
    finally:
        for claim in (first, second, third):
            claim.release()


def test_a_released_id_is_taken_again_by_the_next_process(tmp_path: Path) -> None:
    first = claim_instance_id("host:run", tmp_path)
    first.release()
    again = claim_instance_id("host:run", tmp_path)
    assert again.instance_id == "host:run"
    again.release()


def test_an_id_of_a_process_killed_with_sigkill_is_free_at_once(tmp_path: Path) -> None:
    """The restart case: the kernel drops a dead holder's lock, so its successor gets its id."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from services.instance import claim_instance_id; "
            f"claim_instance_id('host:run', Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        taken = claim_instance_id("host:run", tmp_path)
        assert taken.instance_id == "host:run#2"
        taken.release()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        successor = claim_instance_id("host:run", tmp_path)
        assert successor.instance_id == "host:run"
        successor.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_long_id_keeps_within_the_lease_owner_column(tmp_path: Path) -> None:
    base = "h" * 64
    first, second = claim_instance_id(base, tmp_path), claim_instance_id(base, tmp_path)
    assert len(second.instance_id) == 64 and second.instance_id.endswith("#2")
    first.release()
    second.release()
