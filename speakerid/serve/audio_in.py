"""Uploaded audio -> a waveform at the model's rate, with the service's bounds.

The bytes go to a temporary file (named by the server, never by the client) and are read by
:func:`speakerid.audio.load_audio`, the toolkit's one audio reader (mix-down, resampling, its
checks for corrupt, empty, silent and NaN audio), after the header's duration
(``soundfile.info``: frames / sample rate) is checked against ``max_seconds``: a small
compressed file that would decode to hours is refused before anything is decoded. When the
header gives no length, at most ``max_seconds`` (+1 frame) are decoded to find out.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import soundfile as sf

SUFFIXES = {
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
    "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/opus": ".ogg",
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3",
}


class UploadError(ValueError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Clip:
    wave: object  # torch.Tensor [T]
    seconds: float
    speech_seconds: float


def decode(data: bytes, content_type: str, sample_rate: int, max_seconds: float, min_speech: float) -> Clip:
    from speakerid.audio import AudioError, load_audio, require_min_length
    from speakerid.features.vad import speech_seconds

    if not data:
        raise UploadError(422, "empty_audio", "the request holds no audio (0 bytes)")
    suffix = SUFFIXES.get(content_type.split(";")[0].strip().lower(), ".audio")
    fd, path = tempfile.mkstemp(prefix="speakerid-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            with sf.SoundFile(path) as f:
                frames, rate = int(f.frames), int(f.samplerate)
                if rate <= 0:
                    raise UploadError(422, "unreadable_audio", "the audio header gives no sample rate")
                limit = int(max_seconds * rate)
                if frames <= 0 or frames > 2**62:  # no usable length in the header: decode at most the limit
                    frames = len(f.read(limit + 1, dtype="float32", always_2d=True))
        except sf.LibsndfileError as e:
            detail = str(e).split(":")[-1].strip()
            raise UploadError(422, "unreadable_audio", f"unreadable audio, or a format soundfile cannot read ({detail}); "
                              "send WAV, FLAC, OGG (Vorbis/Opus) or MP3") from None
        except (RuntimeError, TypeError, ValueError) as e:
            if isinstance(e, UploadError):
                raise
            raise UploadError(422, "unreadable_audio", "unreadable or corrupt audio") from None
        if frames > limit:
            raise UploadError(413, "audio_too_long", f"the audio lasts {frames / rate:.1f} s; the limit is {max_seconds:g} s")
        try:
            wave, _ = load_audio(path, sample_rate)
            require_min_length(wave, sample_rate, "audio")
        except AudioError as e:
            msg = str(e).replace(path, "audio")
            code = {"silent": "silent_audio", "empty": "empty_audio", "too short": "audio_too_short"}.get(e.reason, "unreadable_audio")
            raise UploadError(422, code, msg) from None
    finally:
        os.unlink(path)
    speech = speech_seconds(wave, sample_rate)
    if speech < min_speech:
        raise UploadError(422, "too_little_speech", f"only {speech:.2f} s of speech after silence trimming; at least "
                          f"{min_speech:g} s is needed per clip")
    return Clip(wave, wave.numel() / sample_rate, float(speech))
