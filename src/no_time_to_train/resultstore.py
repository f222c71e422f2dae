"""Crash-safe, resumable per-item results: append-only JSON lines, one file per rank.

Each finished item is one line ``{"key": ..., ...payload}``, written with a single ``write`` of the whole
line, flushed and fsync'ed, so a kill -9 loses only the items in flight. A half-written last line (no
trailing newline, or not valid JSON) is ignored on reading and cut off before appending. Reruns read every
rank's file, so a run can resume with a different number of processes. An item can also be recorded as
skipped (``{"key": ..., "skipped": reason}``); a rerun retries it. A run holds its folder with a lock
(:mod:`runlock`) for as long as it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import OutputError
from .runlock import RunLock


class ResultStore:
    """The results of one run, in ``directory``: ``part-<rank>.jsonl`` files and a ``run.json`` signature."""

    def __init__(self, directory: str | os.PathLike, rank: int = 0):
        self.dir = Path(directory)
        self.rank = rank
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"part-{rank:05d}.jsonl"
        self._fh = None

    # -- run ownership ----------------------------------------------------------------------------------
    @contextmanager
    def claim(self, signature: dict, dist, overwrite: bool = False,
              outputs: Sequence[str | os.PathLike] = (), what: str | None = None) -> Iterator["ResultStore"]:
        """Own the output for one run: lock it, check the settings, and clean up after a run that made nothing.

        Rank 0 takes the folder's :class:`RunLock` (a second run on the same output is refused with the
        holder's pid) and keeps it until the ``with`` block ends, and checks the settings
        (:meth:`check_signature`, which with ``overwrite`` first deletes ``outputs``, the previous run's
        merged files or folders); the other ranks of the run wait for it (if it fails, torchrun stops them).
        A run that fails before finishing any item leaves nothing behind: its folder (``run.json``, lock)
        is removed, so a corrected command is not refused. ``what`` names the output in the message a
        second run gets (default: this folder).
        """
        lock = RunLock(self.dir, what) if dist.is_main else None
        try:
            if dist.is_main:
                self.check_signature(signature, overwrite, outputs=outputs)
            dist.barrier()
            yield self
        except BaseException:
            if dist.is_main and not self.done():
                self.close()
                shutil.rmtree(self.dir, ignore_errors=True)
            raise
        finally:
            self.close()
            if lock is not None:
                lock.release()

    def check_signature(self, signature: dict, overwrite: bool = False,
                        outputs: Sequence[str | os.PathLike] = ()) -> None:
        """Make sure earlier partial results were produced by the same run settings.

        The first run writes ``run.json``; a rerun with different settings is refused, naming the settings
        that changed, rather than silently mixing results, unless ``overwrite`` (which deletes the old
        results and ``outputs`` first) or no item was finished yet (then the new settings simply replace
        the old ones). Writes: called by rank 0 only (see :meth:`claim`).
        """
        sig_path = self.dir / "run.json"
        if sig_path.exists() and not overwrite:
            old = json.loads(sig_path.read_text())
            if old == signature:
                return
            if self.done():
                changes = "; ".join(_changes(old, signature))
                raise OutputError(
                    f"{self.dir} holds results of a run with different settings ({changes}); rerun with the "
                    "earlier settings to resume, use another output (-o), or pass --overwrite to discard them"
                )
        for p in [*self.dir.glob("part-*.jsonl"), *(map(Path, outputs) if overwrite else ())]:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
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
        """Every finished item of every rank, by key: its result, or ``{"key", "skipped": reason}`` for an
        item that was skipped (see :meth:`skip`). A later duplicate wins, except that a result always beats
        a skip (a rerun on another number of ranks may write the retried item into another rank's file).
        """
        out: dict[Any, dict] = {}
        for path in sorted(self.dir.glob("part-*.jsonl")):
            for rec in self._read_lines(path):
                if "skipped" in rec and rec["key"] in out and "skipped" not in out[rec["key"]]:
                    continue
                out[rec["key"]] = rec
        return out

    def done(self) -> set:
        """Keys of the items with a result (skipped items are not done: a rerun retries them)."""
        return {k for k, rec in self.records().items() if "skipped" not in rec}

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
        with _naming(self.path):
            fh = self._open()
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def skip(self, key: Any, reason: str) -> None:
        """Record that an item was skipped (e.g. an unreadable image), so that rank 0 can list it."""
        self.append(key, skipped=reason)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to a temporary file beside ``path`` and rename it into place, creating parent
    folders; readers never see a partial file. The file is created by ``open``, so its mode honours the umask
    (0644 under umask 022), unlike ``tempfile.mkstemp`` or safetensors' ``save_file`` (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with _naming(tmp), open(tmp, "wb") as f:
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


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an OSError that names no file (a write on a descriptor, e.g. disk full) the name of ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs, nested keys joined by dots."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "unset"), new.get(k, "unset")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out
