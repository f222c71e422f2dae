"""One run per output folder: an exclusive lock file, held for the whole run, that names its holder.

The lock is ``fcntl.flock`` on ``<folder>/.lock``: the kernel releases it when the holding process ends, even
by kill -9, so there are no stale locks to clean up. The file records the holder (pid, host, start time)
for the message that a second process gets. Under torchrun only rank 0 takes it (the other ranks of one run
share it). On systems without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """Hold ``<directory>/.lock`` until :meth:`release`; raises :class:`OutputError` if another process holds it.

    what: how the folder is named in the message (e.g. ``"output folder out"``).
    """

    def __init__(self, directory: str | os.PathLike, what: str | None = None):
        self.path = Path(directory) / LOCK_NAME
        self.what = what or f"output folder {Path(directory)}"
        self._fd: int | None = None
        if fcntl is not None:
            self._acquire()

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(f"{self.what} is in use by {holder}; wait for it to finish or use another "
                                  "output (-o)") from None
            try:  # the holder before us may have deleted the file (a finished run removes its folder): retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next run in (the lock file stays: removing it would race with a process opening it)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {info['pid']} on {info['host']} (started {info['started']})"
    except (ValueError, KeyError, OSError):
        return "another process"
