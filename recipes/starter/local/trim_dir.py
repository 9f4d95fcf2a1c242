#!/usr/bin/env python3
"""Copy a data dir with every utterance silence-trimmed (speakerid.features.vad.trim_silence) as FLAC.

    python recipes/starter/local/trim_dir.py data/speech/dev data/speech_trim/dev

The trimmed audio goes to OUT/audio/<utt>.flac (under the recipe's data dir, never into the
source tree); utt2spk, spk2utt and trials are copied, utt2dur is rewritten. This is the starter
model's front end: trimming before fbank, in training and in evaluation alike.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakerid.audio import load_audio  # noqa: E402
from speakerid.data.datadir import read_data_dir, write_data_dir  # noqa: E402
from speakerid.features.vad import trim_silence  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--sample-rate", type=int, default=16000)
    a = p.parse_args(argv)
    data = read_data_dir(a.src)
    audio = a.out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    wav, dur = {}, {}
    for utt in tqdm(data.utts, desc=f"trim {a.src}", mininterval=10):
        path = audio / (utt.replace("/", "__") + ".flac")
        if not path.exists():
            w, sr = load_audio(data.wav[utt], a.sample_rate)
            t = trim_silence(w, sr)
            w = t if t.numel() >= 0.3 * sr else w  # (almost) no speech found: keep the file as is
            tmp = path.with_suffix(".tmp.flac")
            sf.write(tmp, w.numpy(), sr, subtype="PCM_16")
            tmp.replace(path)
        wav[utt] = str(path.resolve())
        dur[utt] = sf.info(path).duration
    write_data_dir(a.out, wav, dict(data.utt2spk), dur)
    if (a.src / "trials").exists():
        shutil.copyfile(a.src / "trials", a.out / "trials")
    print(f"{a.out}: {len(wav)} utterances, {sum(data.utt2dur.values()) / 3600:.2f} h -> {sum(dur.values()) / 3600:.2f} h after trimming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
