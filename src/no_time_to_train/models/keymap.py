"""Helpers shared by the checkpoint key maps and the loaders."""

from __future__ import annotations

import re
from typing import Iterable, Sequence


def few(keys: Iterable[str], n: int = 5) -> str:
    """The first ``n`` sorted keys, comma-separated, and how many more there are (for error messages)."""
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def rename(key: str, table: Sequence[tuple[re.Pattern, str]]) -> str | None:
    """``key`` rewritten by the first matching ``(pattern, replacement)`` of ``table``, or None."""
    for pattern, repl in table:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None
