#!/usr/bin/env python3
"""Which enrolment scoring rule verifies best: mean, max or top-k mean of the references?

On held-out speakers of the real speech in ``shared/data/speech`` (speaker-disjoint from the
model's training data), every speaker with at least ``--enroll + 1`` utterances is enrolled
into a :class:`speakerid.enroll.speaker_db.SpeakerDB` from ``--enroll`` files (all embeddings kept);
each of its other files (at most ``--tests-per-speaker``) is a test. Trials: every test file
against every enrolled speaker of the SAME corpus (the id prefix before ``_``; across corpora
the channel alone gives the answer away). Each trial is scored through the DB with each rule
(``SpeakerDB.score_references``, the code ``speakerid verify --score`` runs), raw cosine and,
when the model has a cohort, AS-norm. The table: EER and minDCF@0.01 per rule, pooled and per
corpus.

Model: ``--exp DIR`` (any experiment dir); without it a small ECAPA-TDNN is trained on the
training split first (a few CPU minutes; the split, config and model are kept in ``--work`` and
reused by a rerun). Run the heavy part under the CPU lock:

    flock /tmp/speakerid_cpu.lock python benchmarks/bench_enroll_scoring.py \
        --out benchmarks/results_enroll_scoring.txt
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = Path(os.environ.get("SPEAKERID_SHARED_DATA", REPO.parent / "shared" / "data"))
if not DEFAULT_SHARED.is_dir():
    DEFAULT_SHARED = Path("/work/shared/data")

TRAIN_CONFIG = """\
# bench_enroll_scoring.py: a small CPU-sized ECAPA-TDNN (AAM), as benchmarks/train_shared_speech.sh
seed: 0
epochs: {epochs}
features: {{num_mel_bins: 80, dither: 0.0}}
data: {{chunk_frames: 200, batch_size: 32, sampler: shuffle, num_workers: 1}}
model:
  name: ecapa_tdnn
  kwargs: {{channels: 128, mfa_channels: 384, se_bottleneck: 64, attention_dim: 64, embed_dim: 128}}
loss: {{name: aam, kwargs: {{}}}}
optim: {{name: sgd, lr: 0.1, final_lr: 0.001, warmup_epochs: 1.0, weight_decay: 0.0001}}
margin: {{initial: 0.0, final: 0.2, increase_start_epoch: 1, fix_start_epoch: 4}}
keep_checkpoints: 2
average_last: 2
log_every: 20
"""


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def prepare(work: Path, shared: Path, dev_speakers: int, epochs: int) -> Path:
    """Speaker-disjoint split of shared speech, then train a small model on its train part."""
    data = work / "data"
    if not (data / "dev" / "wav.scp").is_file():
        _run([sys.executable, "data_prep/folder.py", str(shared / "speech"), str(data), "--dev-speakers",
              str(dev_speakers), "--group-by-prefix", "--seed", "0", "--force"])
    exp = work / "exp"
    if not (exp / "model.pt").is_file():
        conf = work / "conf.yaml"
        conf.write_text(TRAIN_CONFIG.format(epochs=epochs))
        resume = ["--resume"] if list((exp / "checkpoints").glob("epoch_*.pt")) else []
        _run([sys.executable, "-m", "speakerid", "train", "--config", str(conf), "--data", str(data / "train"),
              "--exp", str(exp), *resume])
    if not (exp / "cohort.npz").is_file():
        make_cohort(exp, data / "train")
    return exp


def make_cohort(exp: Path, train_dir: Path) -> None:
    """AS-norm cohort of the model: one embedding per training speaker (its first utterance)."""
    import torch

    from speakerid.enroll.model import SpeakerModel
    from speakerid.scoring.embeddings import save_embeddings

    torch.set_num_threads(1)
    wav = _read_map(train_dir / "wav.scp")
    first: dict[str, str] = {}
    for utt, spk in sorted(_read_map(train_dir / "utt2spk").items()):
        first.setdefault(spk, utt)
    ids = sorted(first.values())
    model = SpeakerModel.from_experiment(exp)
    emb = model.embed([wav[u] for u in ids])
    save_embeddings(exp / "cohort.npz", ids, emb)
    print(f"cohort: {len(ids)} training utterances -> {exp / 'cohort.npz'}", flush=True)


def _read_map(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            out[key] = value
    return out


def dev_speakers(data_dir: Path, n_enroll: int, tests_per_speaker: int) -> dict[str, tuple[list[str], list[str]]]:
    """speaker -> (enrolment files, test files), in sorted utterance order (deterministic)."""
    wav = _read_map(data_dir / "wav.scp")
    by_spk: dict[str, list[str]] = defaultdict(list)
    for utt, spk in sorted(_read_map(data_dir / "utt2spk").items()):
        by_spk[spk].append(wav[utt])
    return {
        spk: (files[:n_enroll], files[n_enroll : n_enroll + tests_per_speaker])
        for spk, files in sorted(by_spk.items())
        if len(files) > n_enroll
    }


def corpus(speaker: str) -> str:
    return speaker.split("_", 1)[0]


def evaluate(exp: Path, data_dir: Path, work: Path, n_enroll: int, tests_per_speaker: int, top_k: int) -> str:
    import numpy as np
    import torch

    from speakerid.enroll.rules import SCORE_RULES
    from speakerid.enroll.speaker_db import SpeakerDB
    from speakerid.enroll.model import SpeakerModel
    from speakerid.scoring.metrics import compute_eer, compute_min_dcf

    torch.set_num_threads(1)
    split = dev_speakers(data_dir, n_enroll, tests_per_speaker)
    model = SpeakerModel.from_experiment(exp)
    db_path = work / "bench_enroll.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    t0 = time.perf_counter()
    db = SpeakerDB(db_path, model, score_top_k=top_k)
    for spk, (enroll, _) in split.items():
        db.enroll(spk, enroll)
    tests = [(spk, f) for spk, (_, files) in split.items() for f in files]
    test_emb = model.embed([f for _, f in tests])
    t_embed = time.perf_counter() - t0
    norms = ["cosine"] + (["asnorm"] if model.cohort is not None else [])
    # rows: (rule, norm) -> corpus -> (scores, labels)
    results: dict[tuple[str, str], dict[str, tuple[list[float], list[int]]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    speakers = sorted(split)
    n_trials = 0
    for (true_spk, _), emb in zip(tests, test_emb):
        group = corpus(true_spk)
        for spk in speakers:
            if corpus(spk) != group:
                continue
            n_trials += 1
            for rule in SCORE_RULES:
                raw = db.score_references(spk, emb, rule=rule)
                for norm in norms:
                    s = raw.cosine if norm == "cosine" else raw.asnorm
                    for key in (group, "all"):
                        results[(rule, norm)][key][0].append(s)
                        results[(rule, norm)][key][1].append(int(spk == true_spk))
    db.close()
    corpora = sorted({corpus(s) for s in speakers})
    lines = [
        f"# bench_enroll_scoring.py: model {exp} ({model.fingerprint[:12]}), cohort "
        f"{'none' if model.cohort is None else f'{model.cohort.shape[0]} embeddings'}",
        f"# {len(split)} held-out speakers of {data_dir} with > {n_enroll} files; enrolled from {n_enroll} files each, "
        f"{len(tests)} test files (<= {tests_per_speaker} per speaker), {n_trials} within-corpus trials; "
        f"topk = mean of the best {top_k}; enrol + embed {t_embed:.0f} s",
        "# trials per corpus: " + ", ".join(
            f"{c} {len(results[(SCORE_RULES[0], 'cosine')][c][1])} ({sum(results[(SCORE_RULES[0], 'cosine')][c][1])} target)"
            for c in corpora
        ),
        f"{'rule':<8}{'score':<8}{'EER all':>9}{'minDCF0.01':>11}" + "".join(f"{'EER ' + c:>19}" for c in corpora),
    ]
    best: dict[str, tuple[float, str]] = {}
    for (rule, norm), per in results.items():
        s, lab = (np.asarray(v) for v in per["all"])
        eer = 100 * compute_eer(s, lab)[0]
        dcf = compute_min_dcf(s, lab, 0.01)[0]
        cells = []
        for c in corpora:
            cs, cl = (np.asarray(v) for v in per[c])
            cells.append(f"{100 * compute_eer(cs, cl)[0]:>18.2f}%" if 0 < cl.sum() < cl.size else f"{'-':>19}")
        lines.append(f"{rule:<8}{norm:<8}{eer:>8.2f}%{dcf:>11.3f}" + "".join(cells))
        if norm not in best or eer < best[norm][0]:
            best[norm] = (eer, rule)
    for norm, (eer, rule) in best.items():
        lines.append(f"# best rule on {norm} scores (pooled EER): {rule} ({eer:.2f} %)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", type=Path, help="experiment dir to use (default: train a small one into --work)")
    ap.add_argument("--data", type=Path, help="held-out data dir (default: --work/data/dev)")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help=f"shared data root (default {DEFAULT_SHARED})")
    ap.add_argument("--work", type=Path, default=Path("/tmp/speakerid_bench_enroll"), help="split, model and DB go here")
    ap.add_argument("--dev-speakers", type=int, default=120, help="speakers held out of training (default 120)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the small model (default 8)")
    ap.add_argument("--enroll", type=int, nargs="+", default=[3, 5],
                    help="enrolment files per speaker; one table per value (default 3 5)")
    ap.add_argument("--tests-per-speaker", type=int, default=8, help="test files per speaker at most (default 8)")
    ap.add_argument("--top-k", type=int, default=2, help="k of the topk rule (default 2)")
    ap.add_argument("--prepare-only", action="store_true", help="split and train, then stop")
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not (a.shared / "speech").is_dir() and a.exp is None:
        sys.exit(f"{a.shared / 'speech'}: shared speech not found (give --shared)")
    a.work.mkdir(parents=True, exist_ok=True)
    exp = a.exp or prepare(a.work, a.shared, a.dev_speakers, a.epochs)
    if a.prepare_only:
        return
    table = "\n".join(evaluate(exp, a.data or a.work / "data" / "dev", a.work, n, a.tests_per_speaker, a.top_k)
                      for n in a.enroll)
    print(table, end="")
    if a.out:
        a.out.write_text(table)


if __name__ == "__main__":
    main()
