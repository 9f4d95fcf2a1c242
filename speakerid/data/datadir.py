"""Kaldi-style data directories: ``wav.scp``, ``utt2spk``, ``spk2utt``, ``utt2dur``.

One line per utterance, ``<utt-id> <value>``, sorted by utterance id (Kaldi's convention,
so that Kaldi, WeSpeaker and ESPnet users can use the directories as they are). Utterance
ids for VoxCeleb are ``spk/video/utt`` (the relative path without extension).
Optional files: ``feats.scp`` (kaldiio), ``trials``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from speakerid.fileio import atomic_write


class DataDirError(ValueError):
    """A data directory is missing a file or has a malformed line."""


def read_kv(path: str | os.PathLike, required: bool = True) -> dict[str, str]:
    """Read a Kaldi ``key value`` file into an ordered dict; the value is the rest of the line."""
    path = Path(path)
    if not path.exists():
        if required:
            raise DataDirError(f"{path}: file not found")
        return {}
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DataDirError(f"{path}:{lineno}: expected '<key> <value>', got {line!r}")
            key, value = parts
            if key in out:
                raise DataDirError(f"{path}:{lineno}: duplicate key {key!r}")
            out[key] = value
    return out


def write_kv(path: str | os.PathLike, items: dict[str, str]) -> None:
    """Write ``key value`` lines sorted by key, atomically."""
    with atomic_write(path) as f:
        for key in sorted(items):
            f.write(f"{key} {items[key]}\n")


@dataclass
class DataDir:
    """The contents of a data directory, keyed by utterance id (sorted)."""

    path: Path
    wav: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] = field(default_factory=dict)
    feats: dict[str, str] = field(default_factory=dict)

    @property
    def utts(self) -> list[str]:
        return sorted(self.wav)

    @property
    def speakers(self) -> list[str]:
        return sorted(set(self.utt2spk.values()))

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt in self.utts:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return out


def read_data_dir(path: str | os.PathLike) -> DataDir:
    """Read a data dir; ``wav.scp`` and ``utt2spk`` are required and must cover the same ids."""
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: not a data directory")
    wav = read_kv(path / "wav.scp")
    utt2spk = read_kv(path / "utt2spk")
    missing = [u for u in wav if u not in utt2spk]
    if missing:
        raise DataDirError(
            f"{path / 'utt2spk'}: {len(missing)} utterance(s) of wav.scp have no speaker, e.g. {missing[:3]}"
        )
    extra = [u for u in utt2spk if u not in wav]
    if extra:
        raise DataDirError(
            f"{path / 'wav.scp'}: {len(extra)} utterance(s) of utt2spk have no audio, e.g. {extra[:3]}"
        )
    utt2dur: dict[str, float] = {}
    for utt, value in read_kv(path / "utt2dur", required=False).items():
        try:
            utt2dur[utt] = float(value)
        except ValueError:
            raise DataDirError(f"{path / 'utt2dur'}: bad duration {value!r} for {utt}") from None
    feats = read_kv(path / "feats.scp", required=False)
    return DataDir(path=path, wav=wav, utt2spk=utt2spk, utt2dur=utt2dur, feats=feats)


def write_data_dir(
    path: str | os.PathLike,
    wav: dict[str, str],
    utt2spk: dict[str, str],
    utt2dur: dict[str, float] | None = None,
) -> None:
    """Write ``wav.scp``, ``utt2spk``, ``spk2utt`` and (when given) ``utt2dur``, each atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for utt, value in list(wav.items()) + list(utt2spk.items()):
        if any(c.isspace() for c in utt):
            raise DataDirError(f"{path}: utterance id {utt!r} contains whitespace")
    write_kv(path / "wav.scp", wav)
    write_kv(path / "utt2spk", utt2spk)
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_kv(path / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
    if utt2dur is not None:
        write_kv(path / "utt2dur", {u: f"{d:.3f}" for u, d in utt2dur.items()})
