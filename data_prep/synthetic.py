#!/usr/bin/env python3
"""A synthetic multi-speaker corpus that needs nothing but numpy/scipy: the demo's default data.

Speech-like audio from a source-filter model (Fant 1960; the cascade formant synthesiser of
Klatt 1980, J. Acoust. Soc. Am. 67(3)):

* source: a glottal pulse train from a jittered f0 contour (per-cycle jitter and shimmer),
  shaped by a two-pole glottal low-pass ``1 / (1 - p z^-1)^2`` (spectral tilt), plus aspiration
  noise (breathiness); lip radiation ``1 - 0.97 z^-1``;
* filter: five cascaded 2nd-order IIR resonators (Klatt 1980, eq. 1-3:
  ``r = exp(-pi B / fs)``, ``a1 = -2 r cos(2 pi F / fs)``, ``a2 = r^2``, unity DC gain),
  updated every 10 ms along smooth formant tracks between vowel targets (Peterson & Barney
  1952 averages) and applied with ``scipy.signal.lfilter`` carrying the filter state.

Speaker identity lives in the parameters: median f0 and intonation range, vocal-tract length
(a formant scale), personal vowel formant offsets, F4/F5, bandwidths, static nasal/sinus-like
resonances, glottal tilt, jitter, shimmer, breathiness and speaking rate (male/female-like
clusters overlap on purpose). Each
utterance varies in content (random vowel sequences, syllable-rate envelope, fricative bursts,
pauses), in a small session drift of the speaker's parameters, in channel (random peaking EQ,
tilt, band limit, gain) and in additive coloured noise at a random SNR. So a speaker is
learnable but not separable from the long-term spectrum alone: with the defaults (40 x 20,
seed 0) the untrained mean-fbank cosine baseline (``data_prep/baseline_eer.py``) has an EER of
about 28 %, and an LDA on the same features fitted on 32 train speakers about 8 %.

Everything is deterministic from ``--seed`` (one numpy Generator per speaker and per utterance,
seeded by ``(seed, speaker, utterance)``, so the corpus does not depend on the order of work).
Writes ``<out>/audio/<spk>/<utt>.wav`` (16 kHz, 16-bit) and the data dir(s), with the same
split and trial options as folder.py.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, lfilter, sosfilt
from scipy.signal.windows import tukey
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find data_prep.common

from data_prep.common import (  # noqa: E402
    PrepError,
    SkipReport,
    SplitTrialOptions,
    add_split_trial_args,
    final_summary,
    make_parser,
    run_main,
    setup_logging,
    staged_dir,
    write_prepared,
)

log = logging.getLogger("data_prep.synthetic")

SAMPLE_RATE = 16000
BLOCK = 160  # formant update interval: 10 ms at 16 kHz
EXAMPLE = (
    "python data_prep/synthetic.py data/synth --speakers 40 --utts 20 --dev-speakers 8 --make-trials 2000 --seed 0"
)

# Average adult-male formants F1-F3 (Hz) of ten American English vowels (Peterson & Barney 1952).
VOWELS = np.array(
    [
        [270, 2290, 3010],  # i
        [390, 1990, 2550],  # I
        [530, 1840, 2480],  # E
        [660, 1720, 2410],  # ae
        [730, 1090, 2440],  # a
        [570, 840, 2410],  # O
        [440, 1020, 2240],  # U
        [300, 870, 2240],  # u
        [640, 1190, 2390],  # V
        [490, 1350, 1690],  # 3r
    ],
    dtype=np.float64,
)
# Nuisance strengths, tuned so that the untrained mean-fbank cosine baseline lands at an EER of
# roughly 10-30 % (data_prep/baseline_eer.py) while speakers stay learnable.
F0_SD = 0.2  # between-speaker spread of log median f0 within a voice type
GLOTTAL_POLE = (0.4, 0.95)  # range of the speakers' glottal tilt pole
SCALE_SD = 0.07  # between-speaker spread of the formant scale within a voice type
F45_SD = 0.07  # between-speaker spread of F4/F5 (relative)
VOICE_EQ_BANDS = 4  # static speaker resonances (nasal/sinus-like) beyond the formants
VOICE_EQ_DB = 7.0  # their gain spread (dB)
EQ_DB = 3.0  # std of the three random peaking-EQ gains of a session (dB)
TILT = 0.25  # session tilt coefficient range (+-)
BANDLIMIT_PROB = 0.15  # probability of a 3.4-7 kHz low-pass channel
NOISE_COLOUR = (0.0, 0.6)
SNR_DB = (18.0, 40.0)  # additive noise, uniform in dB
SESSION_F0_SD = 0.035  # session drift of log f0
LEVEL_DB = (-6.0, -1.0)  # peak level, uniform in dB
BANDWIDTHS = np.array([70.0, 100.0, 140.0, 250.0, 320.0])  # B1..B5 (Hz) before the speaker's scale


@dataclass(frozen=True)
class SpeakerParams:
    """Source-filter parameters that make up one voice (also used per utterance, drifted)."""

    f0: float  # median f0 (Hz)
    f0_range: float  # intonation std (semitones)
    formant_scale: float  # ~ 1 / vocal-tract length (1.0 = average adult male)
    vowel_offsets: np.ndarray  # (10, 3) relative formant deviations per vowel: idiolect
    f45: np.ndarray  # (2,) F4, F5 (Hz)
    bw_scale: float  # formant bandwidth scale
    glottal_pole: float  # p of 1 / (1 - p z^-1)^2: higher = steeper spectral tilt
    jitter: float  # per-cycle period perturbation (fraction of the period)
    shimmer: float  # per-cycle amplitude perturbation (fraction)
    breathiness: float  # aspiration noise level relative to the voiced source
    rate: float  # syllables per second
    voice_eq: np.ndarray  # (VOICE_EQ_BANDS, 3) static peaking resonances (Hz, dB, Q): nasal/sinus cavities


def speaker_params(seed: int, index: int) -> SpeakerParams:
    """The voice of speaker ``index`` (deterministic from ``seed``)."""
    rng = np.random.default_rng([seed, 0, index])
    female = rng.random() < 0.5
    # Male-/female-like clusters with overlap: f0 and vocal-tract length are correlated across
    # speakers, so many speakers share a coarse voice type and finer cues must be learned.
    f0 = float(np.exp(rng.normal(np.log(205.0 if female else 120.0), F0_SD)))
    scale = float(rng.normal(1.14 if female else 1.0, SCALE_SD))
    return SpeakerParams(
        f0=f0,
        f0_range=float(rng.uniform(1.0, 3.5)),
        formant_scale=scale,
        vowel_offsets=rng.normal(0.0, 0.05, size=VOWELS.shape),
        f45=np.array([3500.0, 4500.0]) * scale * (1.0 + rng.normal(0.0, F45_SD, size=2)),
        bw_scale=float(rng.uniform(0.8, 1.4)),
        glottal_pole=float(rng.uniform(*GLOTTAL_POLE)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.10)),
        breathiness=float(rng.uniform(0.03, 0.35)),
        rate=float(rng.uniform(3.5, 6.0)),
        voice_eq=np.stack(
            [
                np.exp(rng.uniform(np.log(400.0), np.log(6000.0), VOICE_EQ_BANDS)),
                rng.normal(0.0, VOICE_EQ_DB, VOICE_EQ_BANDS),
                rng.uniform(1.0, 3.0, VOICE_EQ_BANDS),
            ],
            axis=1,
        ),
    )


def session_params(spk: SpeakerParams, rng: np.random.Generator) -> SpeakerParams:
    """The speaker on one occasion: small drifts of f0, effort (tilt), breathiness and rate,
    well inside the spread between speakers (so the same voice stays recognisable)."""
    return replace(
        spk,
        f0=spk.f0 * float(np.exp(rng.normal(0.0, SESSION_F0_SD))),
        formant_scale=spk.formant_scale * float(1.0 + rng.normal(0.0, 0.008)),
        glottal_pole=float(np.clip(spk.glottal_pole + rng.normal(0.0, 0.015), 0.3, 0.97)),
        breathiness=spk.breathiness * float(rng.uniform(0.9, 1.1)),
        rate=spk.rate * float(rng.uniform(0.9, 1.1)),
    )


@dataclass
class Timeline:
    """Where the vowels, consonants and pauses of one utterance are (in samples)."""

    nuclei: list[tuple[int, int, int, float]]  # (start, end, vowel index, stress)
    fricatives: list[tuple[int, int]]  # voiceless noise bursts
    murmurs: list[tuple[int, int, float]]  # voiced consonants (nasal/approximant-like): (start, end, level)


def make_timeline(n: int, rate: float, rng: np.random.Generator, sr: int) -> Timeline:
    """Random syllables (optional consonant + vowel nucleus) with pauses, filling ``n`` samples."""
    t = rng.uniform(0.05, 0.2)
    end = n / sr - rng.uniform(0.05, 0.15)
    tl = Timeline([], [], [])
    while True:
        kind = rng.random()
        if kind < 0.3:  # voiceless fricative onset
            length = rng.uniform(0.04, 0.10)
            if t + length < end:
                tl.fricatives.append((int(t * sr), int((t + length) * sr)))
            t += length
        elif kind < 0.45:  # stop closure
            t += rng.uniform(0.02, 0.05)
        elif kind < 0.8 and tl.nuclei:  # voiced consonant bridging from the previous vowel
            length = rng.uniform(0.04, 0.09)
            start = max(tl.nuclei[-1][1] - int(0.02 * sr), 0)
            tl.murmurs.append((start, int((t + length + 0.02) * sr), float(rng.uniform(0.15, 0.35))))
            t += length
        length = rng.uniform(0.55, 0.9) / rate
        if t + length > end:
            break
        vowel, stress = int(rng.integers(len(VOWELS))), float(rng.uniform(0.6, 1.0))
        tl.nuclei.append((int(t * sr), int((t + length) * sr), vowel, stress))
        t += length
        if rng.random() < 0.12:
            t += rng.uniform(0.08, 0.3)
    if not tl.nuclei:  # a very short utterance still has one vowel
        tl.nuclei.append((int(0.1 * n), int(0.9 * n), int(rng.integers(len(VOWELS))), 1.0))
    return tl


def voicing_envelope(tl: Timeline, n: int) -> np.ndarray:
    """Amplitude of the voiced source: raised-cosine vowel nuclei joined by low voiced murmurs."""
    env = np.zeros(n)
    for a, b, _, stress in tl.nuclei:
        env[a:b] = np.maximum(env[a:b], stress * tukey(b - a, 0.5))
    for a, b, level in tl.murmurs:
        b = min(b, n)
        env[a:b] = np.maximum(env[a:b], level * tukey(b - a, 0.3))
    return env


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the last axis with edge padding (keeps length)."""
    if width <= 1:
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(width // 2, width - 1 - width // 2)]
    xp = np.pad(x, pad, mode="edge")
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), -1, xp)


def formant_tracks(p: SpeakerParams, tl: Timeline, num_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """(5, num_blocks) formant frequencies: vowel targets at nucleus centres, linear in between,
    smoothed over 50 ms (coarticulation-like transitions)."""
    centres = np.array([(a + b) / 2 / BLOCK for a, b, _, _ in tl.nuclei])
    targets = np.stack(
        [VOWELS[v] * (1.0 + p.vowel_offsets[v]) * (1.0 + rng.normal(0.0, 0.03, 3)) for _, _, v, _ in tl.nuclei], axis=1
    )  # (3, nuclei): speaker idiolect + token variation
    blocks = np.arange(num_blocks) + 0.5
    f123 = np.stack([np.interp(blocks, centres, targets[k]) for k in range(3)]) * p.formant_scale
    f123 = _smooth(f123, 5)
    f45 = np.repeat(p.f45[:, None], num_blocks, axis=1)
    tracks = np.concatenate([f123, f45], axis=0)
    # keep formants ordered and below Nyquist
    tracks[0] = np.clip(tracks[0], 180.0, 1200.0)
    for k in range(1, 5):
        tracks[k] = np.maximum(tracks[k], tracks[k - 1] + 150.0)
    return np.minimum(tracks, 0.45 * SAMPLE_RATE)


def vocal_tract(x: np.ndarray, tracks: np.ndarray, bw_scale: float, sr: int) -> np.ndarray:
    """Time-varying cascade of 2nd-order resonators (Klatt 1980), one coefficient set per block.

    The five sections are multiplied into one order-10 denominator per block (vectorised) so
    each block is one ``lfilter`` call; the state ``zi`` carries over, as a time-varying
    filter does. Only b0 is non-zero, so the state depends on past outputs alone.
    """
    num_blocks = tracks.shape[1]
    bw = BANDWIDTHS[:, None] * bw_scale
    r = np.exp(-np.pi * bw / sr)  # (5, 1)
    a1 = -2.0 * r * np.cos(2.0 * np.pi * tracks / sr)  # (5, blocks)
    a2 = np.broadcast_to(r**2, a1.shape)
    gain = np.prod(1.0 + a1 + a2, axis=0)  # unity DC gain per section
    den = np.ones((num_blocks, 1))
    for k in range(tracks.shape[0]):
        nxt = np.zeros((num_blocks, den.shape[1] + 2))
        nxt[:, :-2] += den
        nxt[:, 1:-1] += a1[k][:, None] * den
        nxt[:, 2:] += a2[k][:, None] * den
        den = nxt
    y = np.empty_like(x)
    zi = np.zeros(den.shape[1] - 1)
    for b in range(num_blocks):
        s = b * BLOCK
        y[s : s + BLOCK], zi = lfilter(gain[b : b + 1], den[b], x[s : s + BLOCK], zi=zi)
    return y


def glottal_source(
    p: SpeakerParams, env: np.ndarray, n: int, rng: np.random.Generator, sr: int
) -> np.ndarray:
    """Pulse train from a jittered f0 contour, glottal low-pass, plus aspiration noise."""
    dur = n / sr
    # f0 contour: smoothed random intonation (std p.f0_range semitones) + declination
    steps = max(4, int(dur * 20))
    into = _smooth(rng.standard_normal(steps + 6), 6)[3:-3]
    into = (into - into.mean()) / (into.std() + 1e-9)
    semitones = p.f0_range * into + np.linspace(1.0, -1.0, steps) * rng.uniform(0.5, 2.0)
    f0 = p.f0 * 2.0 ** (np.interp(np.linspace(0, steps - 1, n), np.arange(steps), semitones) / 12.0)
    phase = np.cumsum(f0) / sr
    idx = np.flatnonzero(np.diff(np.floor(phase))) + 1
    # per-cycle jitter (fraction of the local period), placed with sub-sample precision
    pos = idx + rng.normal(0.0, p.jitter, idx.size) * sr / f0[idx]
    pos = np.clip(pos, 0, n - 2)
    i0 = pos.astype(np.int64)
    frac = pos - i0
    amp = (1.0 + p.shimmer * rng.standard_normal(idx.size)) * env[i0]
    pulses = np.bincount(i0, amp * (1.0 - frac), minlength=n) + np.bincount(i0 + 1, amp * frac, minlength=n)
    g = p.glottal_pole
    voiced = lfilter([1.0], [1.0, -2.0 * g, g * g], pulses)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-9
    aspiration = rng.standard_normal(n) * env
    aspiration /= np.sqrt(np.mean(aspiration**2)) + 1e-9
    return voiced + p.breathiness * aspiration


def peaking_eq(freq: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ Audio-EQ-Cookbook peaking filter as one SOS row."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * freq / sr
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a, -2.0 * np.cos(w0), 1.0 - alpha * a])
    den = np.array([1.0 + alpha / a, -2.0 * np.cos(w0), 1.0 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])


def channel(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A random recording channel: three peaking EQs, a first-order tilt and sometimes a band limit."""
    freqs = np.exp(rng.uniform(np.log(150.0), np.log(6000.0), 3))
    rows = [peaking_eq(float(f), rng.normal(0.0, EQ_DB), rng.uniform(0.7, 2.5), sr) for f in freqs]
    c = rng.uniform(-TILT, TILT)  # first-order tilt: +-20*log10((1+c)/(1-c)) dB across the band
    rows.append(np.array([1.0 / (1.0 + abs(c)), -c / (1.0 + abs(c)), 0.0, 1.0, 0.0, 0.0]))
    sos = np.stack(rows)
    if rng.random() < BANDLIMIT_PROB:  # telephone-/cheap-microphone-like band limit
        sos = np.concatenate([sos, butter(4, rng.uniform(3400.0, 7000.0), fs=sr, output="sos")])
    if rng.random() < 0.3:
        sos = np.concatenate([sos, butter(2, rng.uniform(60.0, 300.0), btype="highpass", fs=sr, output="sos")])
    return sosfilt(sos, x)


# Voiceless fricative noise bands (Hz): /f/-like broad, /s/-like high, /sh/-like mid.
FRICATIVE_BANDS = ((1500.0, 7500.0), (4500.0, 7500.0), (2200.0, 4500.0))


@functools.lru_cache(maxsize=None)
def _bandpass(lo: float, hi: float, sr: int) -> np.ndarray:
    return butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")


def fricatives(tl: Timeline, n: int, voiced_rms: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Band-passed noise bursts, each of a random fricative type, about 10-30 % of the vowel RMS."""
    out = np.zeros(n)
    kinds = rng.integers(len(FRICATIVE_BANDS), size=len(tl.fricatives))
    for kind, (lo, hi) in enumerate(FRICATIVE_BANDS):
        spans = [span for span, k in zip(tl.fricatives, kinds) if k == kind]
        if not spans:
            continue
        env = np.zeros(n)
        for a, b in spans:
            env[a:b] = rng.uniform(0.1, 0.3) * tukey(b - a, 0.6)
        noise = sosfilt(_bandpass(lo, min(hi, 0.45 * sr), sr), rng.standard_normal(n))
        out += noise / (np.std(noise) + 1e-9) * env * voiced_rms
    return out


def synthesize_utterance(
    spk: SpeakerParams, seed: int, spk_index: int, utt_index: int, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """One utterance (float32 in [-1, 1], 1.5-4 s), deterministic from (seed, speaker, utterance)."""
    rng = np.random.default_rng([seed, 1, spk_index, utt_index])
    p = session_params(spk, rng)
    n = int(rng.uniform(1.5, 4.0) * sr) // BLOCK * BLOCK
    tl = make_timeline(n, p.rate, rng, sr)
    env = voicing_envelope(tl, n)
    source = glottal_source(p, env, n, rng, sr)
    tracks = formant_tracks(p, tl, n // BLOCK, rng)
    speech = lfilter([1.0, -0.97], [1.0], vocal_tract(source, tracks, p.bw_scale, sr))  # lip radiation
    if len(p.voice_eq):
        speech = sosfilt(np.stack([peaking_eq(f, g, q, sr) for f, g, q in p.voice_eq]), speech)
    voiced_rms = np.sqrt(np.mean(speech[env > 0.1] ** 2)) + 1e-9
    if tl.fricatives:
        speech = speech + fricatives(tl, n, voiced_rms, rng, sr)
    speech = channel(speech, rng, sr)
    active = np.sqrt(np.mean(speech[env > 0.1] ** 2)) + 1e-9
    q = rng.uniform(*NOISE_COLOUR)  # one-pole noise colour: 0 white, -> 1 brown
    noise = lfilter([1.0], [1.0, -q], rng.standard_normal(n))
    snr_db = rng.uniform(*SNR_DB)
    noise *= active / (np.sqrt(np.mean(noise**2)) + 1e-9) / 10.0 ** (snr_db / 20.0)
    y = speech + noise
    peak = np.max(np.abs(y)) + 1e-9
    y *= 10.0 ** (rng.uniform(*LEVEL_DB) / 20.0) / peak  # random level, never clipping
    return y.astype(np.float32)


def generate_corpus(
    audio_dir: Path, final_audio_dir: Path, num_speakers: int, utts_per_speaker: int, seed: int
) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """Synthesise every utterance into ``audio_dir``; wav.scp points into ``final_audio_dir``
    (where ``audio_dir`` ends up once the staged output is moved into place)."""
    wav: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    utt2dur: dict[str, float] = {}
    width = max(3, len(str(num_speakers - 1)))
    uwidth = max(3, len(str(utts_per_speaker - 1)))
    with tqdm(total=num_speakers * utts_per_speaker, desc="synthesising", unit="utt", leave=False) as bar:
        for s in range(num_speakers):
            spk = f"spk{s:0{width}d}"
            params = speaker_params(seed, s)
            (audio_dir / spk).mkdir(parents=True, exist_ok=True)
            for u in range(utts_per_speaker):
                utt = f"{spk}/utt{u:0{uwidth}d}"
                y = synthesize_utterance(params, seed, s, u)
                sf.write(str(audio_dir / f"{utt}.wav"), y, SAMPLE_RATE, subtype="PCM_16")
                wav[utt] = str(final_audio_dir / f"{utt}.wav")
                utt2spk[utt] = spk
                utt2dur[utt] = len(y) / SAMPLE_RATE
                bar.update()
    return wav, utt2spk, utt2dur


def prepare_synthetic(
    out: Path,
    num_speakers: int,
    utts_per_speaker: int,
    opts: SplitTrialOptions,
    force: bool = False,
) -> str:
    """Write ``out/audio`` and the data dir(s) atomically; return the summary line."""
    if num_speakers < 2 or utts_per_speaker < 1:
        raise PrepError(f"need >= 2 speakers and >= 1 utterance each, got {num_speakers} x {utts_per_speaker}")
    out = Path(os.path.abspath(out))
    start, cpu = time.perf_counter(), time.process_time()
    with staged_dir(out, force) as stage:
        wav, utt2spk, utt2dur = generate_corpus(
            stage / "audio", out / "audio", num_speakers, utts_per_speaker, opts.seed
        )
        notes = write_prepared(stage, wav, utt2spk, utt2dur, opts)
    notes.append(
        f"{sum(utt2dur.values()) / 60:.1f} min of audio in {time.perf_counter() - start:.1f} s "
        f"({time.process_time() - cpu:.1f} s CPU)"
    )
    return final_summary(len(wav), num_speakers, SkipReport(), notes, out)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "synthetic.py",
        "Synthetic speech-like corpus (source-filter voices; 16 kHz wav, 1.5-4 s) -> <out>/audio and "
        "a Kaldi-style data dir, with the split and trial options of folder.py.",
        EXAMPLE,
    )
    parser.add_argument("out", type=Path, help="output folder (audio/ and the data dir)")
    parser.add_argument("--speakers", type=int, default=40, help="number of speakers (default 40)")
    parser.add_argument("--utts", type=int, default=20, help="utterances per speaker (default 20)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    add_split_trial_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    print(prepare_synthetic(args.out, args.speakers, args.utts, SplitTrialOptions.from_args(args), args.force))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
