#!/usr/bin/env bash
# Train a small ECAPA-TDNN on the real speech in ../shared/data/speech for a few CPU minutes and
# report the dev EER before (the same seeded, untrained encoder) and after training.
#
# Dev split: 12 held-out speakers, stratified by corpus (data_prep/folder.py --group-by-prefix),
# 4000 balanced trials whose non-target pairs stay within one corpus (ravdess / cvfa / fsdd), so
# the channel alone cannot answer them. EER is printed pooled and per corpus.
#
#   bash benchmarks/train_shared_speech.sh            # ~7 min on 2 busy CPU cores
#   WORK=/tmp/x SHARED=/path/to/shared/data bash benchmarks/train_shared_speech.sh
#
# Results go to benchmarks/results_train_shared_speech.txt (and the experiment to $WORK/exp).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-${SPEAKERID_SHARED_DATA:-$(cd .. && pwd)/shared/data}}
WORK=${WORK:-/tmp/speakerid_train_shared_speech}
OUT=benchmarks/results_train_shared_speech.txt
# One intra-op thread: on a shared 2-core machine, 2 OpenMP threads competing with other
# processes made a training step ~20x slower (spin-waiting), not faster.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"

python data_prep/folder.py "$SHARED/speech" "$WORK/data" --dev-speakers 12 --make-trials 4000 \
  --group-by-prefix --seed 0 --force

# dither 0: RAVDESS is noise-gated (~50% of its samples are exactly 0). Training with Kaldi dither
# but evaluating without it (as the trainer and extractor do) puts the silent frames at log(eps)
# only at test time; with dither 1.0 this same run ends at ~33% dev EER instead of ~17%.
cat > "$WORK/conf.yaml" <<'EOF'
seed: 0
epochs: 10
features: {num_mel_bins: 80, dither: 0.0}
data: {chunk_frames: 200, batch_size: 32, sampler: shuffle, num_workers: 1}
model:
  name: ecapa_tdnn
  kwargs: {channels: 128, mfa_channels: 384, se_bottleneck: 64, attention_dim: 64, embed_dim: 128}
loss: {name: aam, kwargs: {}}
optim: {name: sgd, lr: 0.1, final_lr: 0.001, warmup_epochs: 1.0, weight_decay: 0.0001}
margin: {initial: 0.0, final: 0.2, increase_start_epoch: 1, fix_start_epoch: 4}
keep_checkpoints: 3
average_last: 2
log_every: 10
EOF

rm -rf "$WORK/exp"
start=$(date +%s)
python -m speakerid train --config "$WORK/conf.yaml" --data "$WORK/data/train" --exp "$WORK/exp" \
  --set dev_data="$WORK/data/dev" --set dev_trials="$WORK/data/dev/trials" 2>&1 \
  | tr '\r' '\n' | grep -v 'it/s\]\|s/it\]' || true
minutes=$(( ($(date +%s) - start + 30) / 60 ))

python - "$WORK" "$minutes" <<'EOF' | tee "$OUT"
"""Dev EER (pooled and per corpus) of the untrained encoder (same seed) and of exp/model.pt."""
import glob, json, sys
import numpy as np, torch
from speakerid.config import load_config
from speakerid.data.datadir import read_data_dir
from speakerid.scoring.metrics import compute_eer, compute_min_dcf
from speakerid.train.trainer import DevSet, DistInfo, build_encoder

work, minutes = sys.argv[1], sys.argv[2]
cfg = load_config(f"{work}/conf.yaml", overrides=[f"dev_data={work}/data/dev", f"dev_trials={work}/data/dev/trials"])
dev = DevSet(cfg, DistInfo())

def metrics(enc):
    enc.eval()
    with torch.no_grad():
        emb = {u: torch.nn.functional.normalize(enc(f.unsqueeze(0)), dim=-1)[0] for u, f in dev.feats.items()}
    out = {}
    for corpus in ("all", "ravdess", "cvfa", "fsdd"):
        trials = [t for t in dev.trials if corpus == "all" or t[0].startswith(corpus)]
        s = np.array([float(emb[a] @ emb[b]) for a, b, _ in trials])
        lab = np.array([t[2] for t in trials])
        out[corpus] = (100 * compute_eer(s, lab)[0], compute_min_dcf(s, lab, 0.01)[0], len(trials))
    return out

torch.manual_seed(cfg.seed)  # the trainer's initial weights
before = metrics(build_encoder(cfg))
enc = build_encoder(cfg)
enc.load_state_dict(torch.load(f"{work}/exp/model.pt", weights_only=True))
after = metrics(enc)
hist = torch.load(sorted(glob.glob(f"{work}/exp/checkpoints/epoch_*.pt"))[-1], weights_only=True)["history"]
n_train = len(read_data_dir(f"{work}/data/train").utts)
print(f"# speakerid train on shared/data/speech: {n_train} train utts, "
      f"12 dev speakers, {len(dev.trials)} within-corpus trials; {minutes} min wall on CPU (OMP_NUM_THREADS=1)")
print(f"# model {cfg.model.name} {cfg.model.kwargs}, loss {cfg.loss.name}, {cfg.epochs} epochs, chunk {cfg.data.chunk_frames} frames, batch {cfg.data.batch_size}")
print(f"{'trials':<10}{'n':>6}{'EER before':>12}{'EER after':>11}{'minDCF0.01 before':>19}{'after':>7}")
for k in before:
    b, a = before[k], after[k]
    print(f"{k:<10}{b[2]:>6}{b[0]:>11.2f}%{a[0]:>10.2f}%{b[1]:>19.3f}{a[1]:>7.3f}")
print("# dev EER per epoch (%): " + " ".join(f"{100 * e:.1f}" for e in hist["dev_eer"]))
print("# dev_eval.json (final averaged model): " + json.dumps(json.load(open(f"{work}/exp/dev_eval.json"))))
EOF
