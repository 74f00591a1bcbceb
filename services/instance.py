"""Which instance this process is: a stable id (the owner of its job leases) that no other live
process on this machine holds at the same time.

A restarted process must get its predecessor's id back at once, so that it takes back that
process's leases without waiting for them to expire; two processes running side by side (two
workers on one host with the default ``<host>:worker``) must never share one, or both would work
on the same job. An exclusive ``flock`` on a file per id gives both: the kernel drops it when its
holder dies, even by SIGKILL, and refuses it to anyone else while the holder lives. A process that
finds its id taken uses ``<id>#2``, ``<id>#3``, ... the first free one, which is just as stable
across restarts of the same set of processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

MAX_SIBLINGS = 64
MAX_ID_CHARS = 64  # the jobs table's lease_owner column


@dataclass
class InstanceClaim:
    """An instance id and the lock file that holds it; ``release`` at shutdown."""

    instance_id: str
    _fd: int | None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def claim_instance_id(base: str, lock_dir: Path) -> InstanceClaim:
    """The first of ``base``, ``base#2``, ``base#3``, ... that no live process holds."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for number in range(1, MAX_SIBLINGS + 1):
        suffix = "" if number == 1 else f"#{number}"
        candidate = base[: MAX_ID_CHARS - len(suffix)] + suffix
        digest = hashlib.sha256(candidate.encode()).hexdigest()[:24]
        fd = os.open(lock_dir / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{candidate}\n{os.getpid()}\n".encode())
        return InstanceClaim(candidate, fd)
    raise RuntimeError(f"{MAX_SIBLINGS} processes already run as instance {base!r} on this machine")
