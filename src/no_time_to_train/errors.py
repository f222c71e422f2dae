"""The library's exceptions. Every message names the offending input and says what to do."""

import errno


class NtttError(Exception):
    """Base class of every error raised on purpose by no-time-to-train."""


class InputError(NtttError, ValueError):
    """A user-supplied image, mask, box, annotation file or argument is missing or unusable."""


class CheckpointError(NtttError, RuntimeError):
    """Model weights are missing, unreadable, or do not match any supported architecture."""


class MemoryMismatchError(NtttError, ValueError):
    """A reference memory does not fit the current encoder, configuration or category set."""


class OutputError(NtttError, RuntimeError):
    """An output folder or file cannot be used: another run holds it, or it holds another run's results."""


_ENVIRONMENT = {
    errno.ENOSPC: "no space left on the device holding {path}: free some space or use an output on another "
                  "disk, then rerun the same command (finished items are kept)",
    errno.EDQUOT: "disk quota exceeded writing {path}: free some space or use an output elsewhere, then rerun "
                  "the same command (finished items are kept)",
    errno.EROFS: "cannot write {path}: the file system is read-only; choose a writable output (-o)",
    errno.EACCES: "permission denied on {path}: choose an output you can write to (-o), or fix its permissions",
    errno.EPERM: "permission denied on {path}: choose an output you can write to (-o), or fix its permissions",
    errno.EISDIR: "{path} is a folder where a file is expected: give a file path",
    errno.ENOTDIR: "{path}: part of this path is a file where a folder is expected: give a folder path",
    errno.EEXIST: "{path} exists and is not a folder: give a folder path",
    errno.EADDRINUSE: "the address {path} is already in use: pick another --port (or stop the other server)",
}


def environment_message(exc: OSError, output: object = None) -> str | None:
    """One line for an operating-system failure the user can fix (disk full, read-only or unwritable folder,
    a folder where a file is expected, a busy port), naming the path (``output`` when the error names none);
    None for any other error."""
    template = _ENVIRONMENT.get(exc.errno)
    if template is None:
        return None
    path = exc.filename if exc.filename is not None else output
    return template.format(path=path if path is not None else "the output")
