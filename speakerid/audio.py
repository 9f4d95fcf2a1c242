"""Audio loading: soundfile -> mono float32 -> resampled, with one clear error per bad file.

:func:`load_audio` is the only way speakerid reads audio. It returns a 1-D float32 tensor in
[-1, 1] (soundfile's float scale; the fbank front end multiplies by 32768 to get Kaldi's int16
scale) at the requested rate. Every failure is an :class:`AudioError` (a ``ValueError``) whose
message is ``"<path>: <problem>"`` on one line, so the CLI can print it as it is:

- missing file -> :class:`AudioFileNotFoundError` (also a ``FileNotFoundError``)
- unreadable / corrupt / empty file, a format libsndfile does not know
- zero samples, all samples zero (digital silence) or all equal (a constant DC signal), NaN or inf samples
- a WAV cut short inside its data chunk (fewer frames than its header promises)

One minimum length: audio shorter than one analysis window (25 ms, or the front end's frame
length) gives no feature frame. :func:`require_min_length` is that rule; every path that embeds
or computes features calls it (``features``, ``extract``, ``enroll``/``verify``/``identify``),
and :func:`check_audio_file` (data preparation) applies it with all the rules above.

Formats libsndfile cannot read (VoxCeleb2 ships AAC in ``.m4a``) are converted with ``ffmpeg``
when it is on the PATH (to a temporary wav, with a timeout); otherwise the error says how to
convert them once, ahead of time.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

logger = logging.getLogger(__name__)

#: Extensions libsndfile cannot decode but ffmpeg can (VoxCeleb2 is AAC in .m4a).
FFMPEG_ONLY_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".wma", ".webm", ".opus", ".amr"})
FFMPEG_TIMEOUT_S = 60.0
#: Kaldi's default analysis window; audio shorter than this gives no fbank frame.
DEFAULT_FRAME_LENGTH_MS = 25.0


class AudioError(ValueError):
    """An audio file cannot be used; the message is ``"<path>: <problem>"``.

    ``reason`` is a short tag of the problem (``unreadable``, ``empty``, ``nan``, ``silent``,
    ``truncated``, ``too short``, ``not found``) for reports that count problems by kind.
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason across processes (feature and DataLoader workers)
        return type(self), (str(self), self.reason)


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio file does not exist (both an :class:`AudioError` and a ``FileNotFoundError``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "not found")

    def __reduce__(self):
        return type(self), (str(self),)


def _conversion_hint(path: Path) -> str:
    return (
        f"libsndfile cannot read '{path.suffix}' files and ffmpeg is not on the PATH; install ffmpeg, "
        f"or convert once: ffmpeg -i {path} -ac 1 -ar 16000 {path.with_suffix('.wav')}"
    )


def _ffmpeg_to_wav(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """Decode ``path`` with ffmpeg into a temporary mono wav and read it back (float32 [T, 1])."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"{path}: {_conversion_hint(path)}")
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix="speakerid_")
    os.close(fd)
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(path), "-ac", "1"]
    if sample_rate:
        cmd += ["-ar", str(sample_rate)]
    cmd += ["-c:a", "pcm_s16le", tmp]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise AudioError(f"{path}: ffmpeg did not finish decoding within {FFMPEG_TIMEOUT_S:.0f} s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError(f"{path}: ffmpeg cannot decode it ({err[-1] if err else f'exit {proc.returncode}'})")
        data, sr = sf.read(tmp, dtype="float32", always_2d=True)
        return data, int(sr)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """soundfile read as float32 [T, C]; ffmpeg fallback for formats libsndfile lacks."""
    if not path.exists():
        raise AudioFileNotFoundError(f"{path}: audio file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)", "empty")
    if path.suffix.lower() in FFMPEG_ONLY_EXTENSIONS:
        return _ffmpeg_to_wav(path, sample_rate)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        # libsndfile's message ("Format not recognised.", "Unspecified internal error.") is terse:
        # keep it, but lead with what it means for the user.
        detail = str(e).split(":")[-1].strip() or "libsndfile error"
        if shutil.which("ffmpeg") is not None:
            logger.debug("%s: soundfile failed (%s); trying ffmpeg", path, detail)
            return _ffmpeg_to_wav(path, sample_rate)
        raise AudioError(f"{path}: unreadable or corrupt audio, or a format soundfile cannot read ({detail})") from None
    except (RuntimeError, TypeError, ValueError) as e:  # soundfile raises these for some broken headers
        raise AudioError(f"{path}: unreadable or corrupt audio ({e})") from None
    check_wav_complete(path, data.shape[0], int(sr))
    return data, int(sr)


# data-chunk sizes written by streaming writers that could not seek back (0, ffmpeg/libsndfile
# 0xFFFFFFFF, and the 0x7FFFF000 / 0x7FFFFFFF of some pipe writers): no promise to check
_WAV_SIZE_PLACEHOLDERS = frozenset({0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF})


def _wav_promised_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header promises (data chunk size / block align), or None when the
    file is not a plain RIFF WAV or the size is a streaming placeholder (0 or 0xFFFFFFFF)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, size = struct.unpack("<4sI", chunk)
            if kind == b"fmt ":
                fmt = f.read(size + (size & 1))
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
            elif kind == b"data":
                if not block_align or size in _WAV_SIZE_PLACEHOLDERS:
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def check_wav_complete(path: str | os.PathLike, frames: int, sample_rate: int) -> None:
    """Raise :class:`AudioError` when a WAV holds fewer frames than its data chunk promises
    (a file cut short by a failed copy or download: libsndfile reads what is there silently)."""
    path = Path(path)
    if path.suffix.lower() not in (".wav", ".wave"):
        return
    try:
        promised = _wav_promised_frames(path)
    except OSError:
        return  # the read that follows gives the precise error
    if promised is not None and frames < promised:
        raise AudioError(
            f"{path}: truncated WAV: the header promises {promised} frames ({promised / sample_rate:.3f} s) "
            f"but the file holds {frames} ({frames / sample_rate:.3f} s)",
            "truncated",
        )


def _check_length(path: str | os.PathLike, num_samples: int, sample_rate: int, frame_length_ms: float) -> None:
    window = int(sample_rate * frame_length_ms * 0.001)
    if num_samples < max(1, window):
        raise AudioError(
            f"{path}: {num_samples} samples ({1000.0 * num_samples / sample_rate:.1f} ms at {sample_rate} Hz) is "
            f"shorter than one analysis window ({window} samples, {frame_length_ms:g} ms)",
            "too short",
        )


def require_min_length(
    wave: torch.Tensor, sample_rate: int, path: str | os.PathLike, frame_length_ms: float = DEFAULT_FRAME_LENGTH_MS
) -> torch.Tensor:
    """The one minimum-length rule: ``wave`` (time last) must hold one analysis window.

    Returns ``wave``; raises :class:`AudioError` ``"<path>: N samples ... shorter than one
    analysis window"`` otherwise.
    """
    _check_length(path, int(wave.shape[-1]), sample_rate, frame_length_ms)
    return wave


def _validate(path: Path, data: np.ndarray) -> None:
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)", "empty")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise AudioError(f"{path}: {bad} NaN or inf sample(s) (a corrupt or badly written float file)", "nan")
    if not np.any(data):
        raise AudioError(f"{path}: all {data.shape[0]} samples are zero (digital silence)", "silent")
    if data.shape[0] > 1 and not np.any(data[1:] != data[0]):
        raise AudioError(f"{path}: all {data.shape[0]} samples equal {float(data.flat[0]):.4g} (a constant DC "
                         "signal: no sound)", "silent")


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> tuple[torch.Tensor, int]:
    """Read an audio file as a mono float32 tensor ``[T]`` at ``sample_rate`` Hz.

    Channels are averaged (mix-down); other rates are resampled with
    ``torchaudio.functional.resample`` (Hann-windowed sinc, its default). Returns
    ``(wave, sample_rate)``. Raises :class:`AudioError` ``"<path>: <problem>"`` for any bad file.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    data, sr = _read(path, sample_rate)
    _validate(path, data)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if sr != sample_rate:
        wave = AF.resample(wave, sr, sample_rate)
        if wave.numel() == 0:
            raise AudioError(f"{path}: too short to resample from {sr} Hz to {sample_rate} Hz", "too short")
    return wave, sample_rate


def native_sample_rate(path: str | os.PathLike) -> int | None:
    """The file's own sample rate from its header (soundfile), or None when soundfile cannot tell."""
    try:
        return int(sf.info(str(path)).samplerate)
    except Exception:  # noqa: BLE001 - unreadable headers are load_audio's to report
        return None


def mp4_duration(path: str | os.PathLike) -> float:
    """Duration of an MP4/M4A file from its ``moov/mvhd`` box (ISO/IEC 14496-12, 8.2.2).

    libsndfile cannot open AAC in MP4 (VoxCeleb2 ships ``.m4a``); the movie header needs no
    decoder: ``duration / timescale`` seconds. Raises :class:`AudioError` for a corrupt file.
    """
    path = Path(path)

    def boxes(f, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        pos = start
        while pos + 8 <= end:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            header = 8
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                header = 16
            elif size == 0:
                size = end - pos
            if size < header:
                raise AudioError(f"{path}: corrupt MP4 box {kind!r}")
            yield kind, pos + header, pos + size
            pos += size

    try:
        with open(path, "rb") as f:
            for kind, start, end in boxes(f, 0, os.fstat(f.fileno()).st_size):
                if kind != b"moov":
                    continue
                for sub, s_start, _ in boxes(f, start, end):
                    if sub != b"mvhd":
                        continue
                    f.seek(s_start)
                    version = f.read(1)[0]
                    f.read(3)  # flags
                    if version == 1:
                        _, _, timescale, duration = struct.unpack(">QQIQ", f.read(28))
                    else:
                        _, _, timescale, duration = struct.unpack(">IIII", f.read(16))
                    if timescale == 0:
                        raise AudioError(f"{path}: MP4 header has timescale 0")
                    return duration / timescale
    except FileNotFoundError:
        raise AudioFileNotFoundError(f"{path}: audio file not found") from None
    except (struct.error, IndexError):
        raise AudioError(f"{path}: corrupt MP4 header (file cut short?)") from None
    raise AudioError(f"{path}: no MP4 movie header (moov/mvhd) found")


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding): ``soundfile.info``, and the
    ``mvhd`` box for MP4/M4A (:func:`mp4_duration`). A truncated WAV is an error.

    Other formats libsndfile cannot read are decoded with ffmpeg (slow) when it is on the PATH.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileNotFoundError(f"{path}: audio file not found")
    suffix = path.suffix.lower()
    if suffix in (".m4a", ".mp4"):
        try:
            return mp4_duration(path)
        except AudioError:
            if shutil.which("ffmpeg") is None:
                raise
            logger.debug("%s: no usable MP4 header; decoding with ffmpeg", path)
    if suffix not in FFMPEG_ONLY_EXTENSIONS:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            pass  # fall through to a full read, which gives the precise error
        else:
            if info.frames > 0 and info.samplerate > 0:
                check_wav_complete(path, info.frames, info.samplerate)
                return float(info.frames) / float(info.samplerate)
    data, sr = _read(path, None)
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)", "empty")
    return float(data.shape[0]) / float(sr)


def check_audio_file(path: str | os.PathLike, frame_length_ms: float = DEFAULT_FRAME_LENGTH_MS) -> float:
    """Decode the whole file and apply every rule of :func:`load_audio` and
    :func:`require_min_length` (unreadable, empty, NaN/inf, all zero, truncated, too short);
    return its duration in seconds. Data preparation calls this, so it keeps only what
    training and embedding accept.

    Formats only ffmpeg decodes are checked from their header when ffmpeg is missing
    (:func:`load_audio` then says how to convert them).
    """
    path = Path(path)
    if path.suffix.lower() in FFMPEG_ONLY_EXTENSIONS and shutil.which("ffmpeg") is None:
        duration = audio_duration(path)
        if duration * 1000.0 < frame_length_ms:
            raise AudioError(f"{path}: {duration * 1000.0:.1f} ms is shorter than one analysis window "
                             f"({frame_length_ms:g} ms)", "too short")
        return duration
    data, sr = _read(path, None)
    _validate(path, data)
    _check_length(path, data.shape[0], sr, frame_length_ms)
    return float(data.shape[0]) / float(sr)
