"""The library's exceptions. Every message names the offending input and says what to do."""


class NtttError(Exception):
    """Base class of every error raised on purpose by no-time-to-train."""


class InputError(NtttError, ValueError):
    """A user-supplied image, mask, box, annotation file or argument is missing or unusable."""


class CheckpointError(NtttError, RuntimeError):
    """Model weights are missing, unreadable, or do not match any supported architecture."""


class MemoryMismatchError(NtttError, ValueError):
    """A reference memory does not fit the current encoder, configuration or category set."""
