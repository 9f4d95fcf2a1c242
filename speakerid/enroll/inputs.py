"""What an enrolment is given: speaker names, the batch list of ``speakerid enroll --batch FILE``
(``speaker path`` per line), and the check that no file is enrolled twice for a speaker."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from speakerid.enroll.records import SpeakerDBError

_CONTROL = re.compile(r"[\x00-\x1f]")


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


def check_name(speaker: str) -> str:
    name = str(speaker).strip()
    if not name or _CONTROL.search(name):
        raise SpeakerDBError(f"invalid speaker name {speaker!r}: must be non-empty, without control characters")
    return name


def check_new_files(store, pairs: Sequence[tuple[str, str | os.PathLike]]) -> None:
    """An error naming the file when a (speaker, file) pair repeats in ``pairs`` or is enrolled
    already (the same file counted twice would weigh double in the speaker's mean)."""
    seen: set[tuple[str, str]] = set()
    for speaker, path in pairs:
        key = (speaker, str(Path(path).resolve()))
        if key in seen:
            raise SpeakerDBError(f"{path}: given twice for {speaker!r}; enrol each file once")
        seen.add(key)
    done = store.enrolled_paths(sorted({s for s, _ in seen}), sorted({p for _, p in seen}))
    for speaker, path in pairs:
        if (speaker, str(Path(path).resolve())) in done:
            raise SpeakerDBError(f"{path}: already enrolled for {speaker!r}; enrol each file once "
                                 f"(speakerid remove, then enrol again, to start over)")
