"""Audio loading: soundfile -> mono float32 -> resampled, with one clear error per bad file.

:func:`load_audio` is the only way speakerid reads audio. It returns a 1-D float32 tensor in
[-1, 1] (soundfile's float scale; the fbank front end multiplies by 32768 to get Kaldi's int16
scale) at the requested rate. Every failure is an :class:`AudioError` (a ``ValueError``) whose
message is ``"<path>: <problem>"`` on one line, so the CLI can print it as it is:

- missing file -> :class:`AudioFileNotFoundError` (also a ``FileNotFoundError``)
- unreadable / corrupt / empty file, a format libsndfile does not know
- zero samples, all samples zero (digital silence), NaN or inf samples

Formats libsndfile cannot read (VoxCeleb2 ships AAC in ``.m4a``) are converted with ``ffmpeg``
when it is on the PATH (to a temporary wav, with a timeout); otherwise the error says how to
convert them once, ahead of time.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

logger = logging.getLogger(__name__)

#: Extensions libsndfile cannot decode but ffmpeg can (VoxCeleb2 is AAC in .m4a).
FFMPEG_ONLY_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".wma", ".webm", ".opus", ".amr"})
FFMPEG_TIMEOUT_S = 60.0


class AudioError(ValueError):
    """An audio file cannot be used; the message is ``"<path>: <problem>"``."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio file does not exist (both an :class:`AudioError` and a ``FileNotFoundError``)."""


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
        raise AudioError(f"{path}: empty file (0 bytes)")
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
    return data, int(sr)


def _validate(path: Path, data: np.ndarray) -> None:
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise AudioError(f"{path}: {bad} NaN or inf sample(s) (a corrupt or badly written float file)")
    if not np.any(data):
        raise AudioError(f"{path}: all {data.shape[0]} samples are zero (digital silence)")


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
            raise AudioError(f"{path}: too short to resample from {sr} Hz to {sample_rate} Hz")
    return wave, sample_rate


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (``soundfile.info``; no decoding).

    Formats libsndfile cannot read are decoded with ffmpeg (slow) when it is on the PATH.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileNotFoundError(f"{path}: audio file not found")
    if path.suffix.lower() not in FFMPEG_ONLY_EXTENSIONS:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            pass  # fall through to a full read, which gives the precise error
        else:
            if info.frames > 0 and info.samplerate > 0:
                return float(info.frames) / float(info.samplerate)
    data, sr = _read(path, None)
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)")
    return float(data.shape[0]) / float(sr)
