"""Bounds on what a file may make speakerid hold, and how long values appear in messages.

Hostile or broken inputs (a 10 MB id in a score file, a YAML alias bomb, a checkpoint that
declares a gigabyte tensor) are refused by these bounds before they cost memory, and an error
never echoes a long value whole: :func:`shorten` cuts it.
"""

from __future__ import annotations

#: longest id (utterance, speaker, trial side) a trial list, score file or embedding file may hold
MAX_ID_CHARS = 1000
#: longest value an error message quotes before cutting it with "..."
MESSAGE_CHARS = 80
#: most YAML nodes a config may expand to (aliases counted as often as they are used)
MAX_YAML_NODES = 100_000


def shorten(value: object, limit: int = MESSAGE_CHARS) -> str:
    """``str(value)`` cut to its first ``limit`` characters plus ``"..."`` when longer."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
