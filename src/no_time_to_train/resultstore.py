"""Crash-safe, resumable per-item results: append-only JSON lines, one file per rank.

Each finished item is one line ``{"key": ..., ...payload}``, written with a single ``write`` of the whole
line, flushed and fsync'ed, so a kill -9 loses only the items in flight. A half-written last line (no
trailing newline, or not valid JSON) is ignored on reading and cut off before appending. Reruns read every
rank's file, so a run can resume with a different number of processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


class ResultStore:
    """The results of one run, in ``directory``: ``part-<rank>.jsonl`` files and a ``run.json`` signature."""

    def __init__(self, directory: str | os.PathLike, rank: int = 0):
        self.dir = Path(directory)
        self.rank = rank
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"part-{rank:05d}.jsonl"
        self._fh = None

    # -- run identity -----------------------------------------------------------------------------------
    def check_signature(self, signature: dict, overwrite: bool = False, is_main: bool = True) -> None:
        """Make sure earlier partial results were produced by the same run settings.

        The first run writes ``run.json``; a rerun with different settings is refused (unless ``overwrite``,
        which clears the old results) rather than silently mixing results.
        """
        sig_path = self.dir / "run.json"
        if sig_path.exists() and not overwrite:
            old = json.loads(sig_path.read_text())
            if old != signature:
                changed = sorted(k for k in set(old) | set(signature) if old.get(k) != signature.get(k))
                raise FileExistsError(
                    f"{self.dir} holds results of a run with different settings ({', '.join(changed)}); "
                    "use another output directory or pass --overwrite to start again"
                )
            return
        if is_main:
            if overwrite:
                for p in self.dir.glob("part-*.jsonl"):
                    p.unlink()
            write_json_atomic(sig_path, signature, indent=1, sort_keys=True)

    # -- reading ----------------------------------------------------------------------------------------
    @staticmethod
    def _read_lines(path: Path) -> Iterator[dict]:
        with open(path, "rb") as f:
            data = f.read()
        # the last element is either empty (file ends with a newline) or a torn, unfinished line
        for raw in data.split(b"\n")[:-1]:
            if not raw.strip():
                continue
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue  # a torn line from a crash is ignored (its item is redone)

    def records(self) -> dict[Any, dict]:
        """Every finished item of every rank, by key (a later duplicate wins)."""
        out: dict[Any, dict] = {}
        for path in sorted(self.dir.glob("part-*.jsonl")):
            for rec in self._read_lines(path):
                out[rec["key"]] = rec
        return out

    def done(self) -> set:
        return set(self.records())

    # -- writing ----------------------------------------------------------------------------------------
    def _open(self):
        if self._fh is None:
            if self.path.exists():
                self._truncate_torn_tail()
            self._fh = open(self.path, "ab")
        return self._fh

    def _truncate_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, key: Any, **payload: Any) -> None:
        """Record one finished item durably."""
        line = (json.dumps({"key": key, **payload}, separators=(",", ":")) + "\n").encode()
        fh = self._open()
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to a temporary file beside ``path`` and rename it into place, creating parent
    folders; readers never see a partial file. The file is created by ``open``, so its mode honours the umask
    (0644 under umask 022), unlike ``tempfile.mkstemp`` or safetensors' ``save_file`` (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, **kwargs: Any) -> Path:
    """Write ``obj`` as JSON (``kwargs`` go to ``json.dumps``) with :func:`write_atomic`."""
    return write_atomic(path, json.dumps(obj, **kwargs))
