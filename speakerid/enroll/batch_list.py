"""The batch list of ``speakerid enroll --batch FILE``: ``speaker path`` per line."""

from __future__ import annotations

import os
from pathlib import Path

from speakerid.enroll.records import SpeakerDBError


def read_batch_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(speaker, audio file)`` pairs of a batch list: ``speaker path`` per line (the path is the
    rest of the line, so it may contain spaces); blank lines and ``#`` comments are skipped.
    Relative paths are relative to the working directory (as in a Kaldi ``wav.scp``). Errors
    name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpeakerDBError(f"{path}: cannot read the batch list ({getattr(e, 'strerror', None) or e})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise SpeakerDBError(f"{path}:{number}: expected 'speaker audio-file', got {line!r}")
        pairs.append((parts[0], parts[1].strip()))
    if not pairs:
        raise SpeakerDBError(f"{path}: no 'speaker audio-file' lines")
    return pairs
