#!/usr/bin/env bash
# The loss study: ONE encoder, ONE budget, eight losses; dev EER / minDCF of each.
#
#   bash benchmarks/loss_study.sh              # ~15 min on 2 busy CPU cores (under the CPU lock)
#   WORK=/tmp/x EPOCHS=6 bash benchmarks/loss_study.sh
#   TABLE_ONLY=1 bash benchmarks/loss_study.sh   # only the table/plot of the losses already run
#
# Data: the starter recipe's split (recipes/starter/run.sh stages 0-2: only the CC0 / CC BY / MIT
# corpora train, silence-trimmed, fbank cached); dev: the first $TRIALS trials of each corpus of
# its speaker-disjoint dev list (non-targets within one corpus), RAVDESS and FSDD included.
# Encoder: ECAPA-TDNN (channels 64, 128-d), 150-frame chunks, P x K = 16 x 4 batches for every
# loss (the pair losses need them; the proxy losses get the same batches), Adam 0.005 with
# cosine decay, SpecAugment, $EPOCHS epochs (3), seed 0. Losses: circle (pair), circle_proxy, aam
# (margin warm-up 0 -> 0.2), triplet (batch hard), contrastive, lifted_structure,
# circle inside a cross-batch memory (1024), MoCo.
# Results: benchmarks/results_loss_study.md (table) and benchmarks/results_loss_study.png.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
WORK=${WORK:-/tmp/speakerid_loss_study}
EPOCHS=${EPOCHS:-3}
TRIALS=${TRIALS:-400}
LOSSES=${LOSSES:-"aam circle circle_proxy triplet contrastive lifted_structure circle_xbm moco"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PYTHON=${PYTHON:-python}
mkdir -p "$WORK"
start=$SECONDS

bash recipes/starter/run.sh --stage 0 --stop-stage 2
data=recipes/starter/data/speech_trim
$PYTHON - "$data/dev" "$WORK/dev" "$TRIALS" <<'PY'
import sys
from pathlib import Path
from speakerid.data.datadir import read_data_dir, write_data_dir
src, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
lines, count = [], {}
for line in (src / "trials").read_text().splitlines():
    c = line.split()[0].split("_", 1)[0]
    if count.get(c, 0) < n:
        count[c] = count.get(c, 0) + 1
        lines.append(line)
utts = {w for l in lines for w in l.split()[:2]}
d = read_data_dir(src)
write_data_dir(out, {u: d.wav[u] for u in sorted(utts)}, {u: d.utt2spk[u] for u in sorted(utts)},
               {u: d.utt2dur[u] for u in sorted(utts)})
(out / "trials").write_text("\n".join(lines) + "\n")
print(f"loss-study dev: {len(lines)} trials, {len(utts)} utterances, per corpus {count}")
PY

for loss in $LOSSES; do
  exp=$WORK/exp/$loss
  name=$loss; extra=""
  case $loss in
    circle) kwargs="{m: 0.25, gamma: 64}" ;;
    circle_xbm) name=circle; kwargs="{m: 0.25, gamma: 64}"; extra="  xbm_size: 1024
  xbm_start_step: 40" ;;
    circle_proxy) kwargs="{m: 0.25, gamma: 64}" ;;
    aam) kwargs="{}" ;;
    *) kwargs="{}" ;;
  esac
  margin="{enabled: false}"
  [ "$loss" = aam ] && margin="{enabled: true, initial: 0.0, final: 0.2, increase_start_epoch: 1, fix_start_epoch: 3}"
  cat > "$WORK/$loss.yaml" <<YAML
seed: 0
epochs: $EPOCHS
features: {num_mel_bins: 80, dither: 0.0}
augment:
  specaug: {enabled: true, freq_masks: 1, freq_width: 8, time_masks: 1, time_width: 15, prob: 0.6}
data: {chunk_frames: 150, sampler: pk, speakers_per_batch: 16, utts_per_speaker: 4, num_workers: 0, use_cached_features: true}
model:
  name: ecapa_tdnn
  kwargs: {channels: 64, mfa_channels: 192, embed_dim: 128, se_bottleneck: 32, attention_dim: 32}
loss:
  name: $name
  kwargs: $kwargs
$extra
optim: {name: adam, lr: 0.005, final_lr: 0.0001, weight_decay: 1.0e-5, warmup_epochs: 1, scheduler: cosine}
margin: $margin
keep_checkpoints: 2
average_last: 2
log_every: 50
YAML
  t0=$SECONDS
  if [ ! -s "$exp/dev_eval.json" ] && [ -z "${TABLE_ONLY:-}" ]; then
    rm -rf "$exp"
    if ! $PYTHON -m speakerid train --config "$WORK/$loss.yaml" --data $data/train --exp "$exp"; then
      echo "loss study: $loss failed to train" >&2; continue
    fi
    $PYTHON -m speakerid extract --exp "$exp" --data "$WORK/dev" --out "$exp/emb_dev" --no-progress
    $PYTHON -m speakerid score --trials "$WORK/dev/trials" --embeddings "$exp/emb_dev" --output "$exp/scores.txt"
    $PYTHON -m speakerid eval --scores "$exp/scores.txt" --json > "$exp/dev_eval.json.tmp"
    mv "$exp/dev_eval.json.tmp" "$exp/dev_eval.json"
    echo $((SECONDS - t0)) > "$exp/wall_s"
  fi
done

$PYTHON - "$WORK" "$EPOCHS" $LOSSES <<'PY'
import json, sys
from pathlib import Path
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from speakerid.scoring.metrics import compute_eer, compute_min_dcf
work, epochs, losses = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
rows = []
missing = [l for l in losses if not (work / "exp" / l / "dev_eval.json").is_file()]
for loss in losses:
    exp = work / "exp" / loss
    if loss in missing:
        continue
    lines = [l.split() for l in (exp / "scores.txt").read_text().splitlines()]
    s = np.array([float(l[2]) for l in lines]); lab = np.array([l[3] in ("target", "1") for l in lines])
    corp = np.array([l[0].split("_", 1)[0] for l in lines])
    per = {c: compute_eer(s[corp == c], lab[corp == c])[0] for c in sorted(set(corp))}
    rows.append((loss, compute_eer(s, lab)[0], compute_min_dcf(s, lab, 0.01)[0], per, int((exp / "wall_s").read_text())))
corpora = sorted(rows[0][3])
md = [f"# Loss study: `bash benchmarks/loss_study.sh` (ECAPA-TDNN c64, {epochs} epochs of 16x4 PK batches, seed 0)", "",
      "| loss | pooled EER | minDCF0.01 | " + " | ".join(f"{c} EER" for c in corpora) + " | wall s |",
      "|" + "---|" * (4 + len(corpora))]
for loss, eer, dcf, per, wall in sorted(rows, key=lambda r: r[1]):
    md.append(f"| {loss} | {eer*100:.2f}% | {dcf:.3f} | " + " | ".join(f"{per[c]*100:.2f}%" for c in corpora) + f" | {wall} |")
if missing:
    md += ["", f"Not run (budget / failure): {', '.join(missing)}."]
Path("benchmarks/results_loss_study.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
names = [r[0] for r in rows]
ax[0].bar(names, [r[1] * 100 for r in rows]); ax[0].set_ylabel("pooled dev EER (%)")
ax[1].bar(names, [r[2] for r in rows], color="tab:orange"); ax[1].set_ylabel("minDCF (P_target 0.01)")
for a in ax: a.tick_params(axis="x", rotation=45)
fig.suptitle("speakerid loss study: one encoder, one budget, dev split of shared speech")
fig.tight_layout(); fig.savefig("benchmarks/results_loss_study.png", dpi=100)
PY
echo "loss study: $((SECONDS - start)) s"
