#!/usr/bin/env bash
# The starter model that ships in speakerid/pretrained/starter, trained on CPU (~20 min on 2 cores, one torch thread).
#
#   shared/data/speech -> speaker-disjoint split (only CC0 / CC BY / MIT corpora train; RAVDESS,
#   FSDD dev only) -> silence trimming -> fbank -> ECAPA-TDNN + pair Circle Loss -> dev embeddings ->
#   AS-norm cohort of training-speaker means -> AS-norm'd cosine scoring -> calibration ->
#   EER/minDCF -> package (speakerid/pretrained/starter) -> benchmark against Resemblyzer
#
# Usage: bash recipes/starter/run.sh [--data DIR] [--noise DIR] [--rir DIR] [--config CONF]
#          [--package DIR] [--exp exp/starter] [--stage N] [--stop-stage M] [--nj N]
# --data, --noise, --rir default to ../shared/data/{speech,noise,rir} (from the repo root); --package to
# speakerid/pretrained/starter (stage 8 overwrites it). Outputs: recipes/starter/data, exp.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
source "$repo/recipes/utils/lib.sh"
parse_common_options "$@"

shared=${SPEAKERID_SHARED_DATA:-$repo/../shared/data}
src=$shared/speech
noise_src=$shared/noise
rir_src=$shared/rir
config=conf/ecapa_circle.yaml
package=$repo/speakerid/pretrained/starter
exp=exp/starter
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
while [ $# -gt 0 ]; do
  case "$1" in
    --data) src=$2; shift 2 ;;
    --noise) noise_src=$2; shift 2 ;;
    --rir) rir_src=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --package) package=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for d in "$src" "$noise_src" "$rir_src"; do
  [ -d "$d" ] || { echo "ERROR: $d: not a directory (--data / --noise / --rir)" >&2; exit 2; }
done
src=$(cd "$src" && pwd); noise_src=$(cd "$noise_src" && pwd); rir_src=$(cd "$rir_src" && pwd)
case "$package" in /*) ;; *) package=$(pwd)/$package ;; esac
case "$config" in /*) ;; *) [ -e "$config" ] && config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config") ;; esac
cd "$here"
# one intra-op thread: on a shared 2-core machine, 2 spinning OpenMP threads made steps far slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
raw=data/speech
data=data/speech_trim
start_time=$SECONDS

if stage 0 "speaker-disjoint split of $src -> $raw/{train,dev}; noise and RIR lists"; then
  if [ -s $raw/dev/trials ]; then log "$raw already there (delete it to redo the split)"; else
    $PYTHON local/make_split.py "$src" $raw --seed 0 --dev-fraction 0.15 --min-dev-speakers 6 \
      --trials-per-corpus 3000 --force
  fi
  $PYTHON "$repo/data_prep/musan.py" "$noise_src" data/noise.list --category noise --force
  $PYTHON "$repo/data_prep/rirs.py" "$rir_src" data/rir.list --force
fi

if stage 1 "silence trimming (speakerid.features.vad.trim_silence) -> $data"; then
  require $raw/dev/trials -- "run stage 0 first (--stage 0)"
  for part in train dev; do $PYTHON local/trim_dir.py $raw/$part $data/$part; done
fi

if stage 2 "fbank features of the trimmed training data"; then
  require $data/train/wav.scp -- "run stage 1 first (--stage 1)"
  $SPEAKERID features --data $data/train --config "$config" --nj "$nj" --no-progress
fi

if stage 3 "train -> $exp"; then
  require $data/train/feats.scp -- "run stage 2 first (--stage 2)"
  if [ -s $exp/model.pt ]; then log "$exp/model.pt exists: training skipped (delete $exp to retrain)"; else
    resume=""
    if ls $exp/checkpoints/epoch_*.pt >/dev/null 2>&1; then resume="--resume"; fi
    $SPEAKERID train --config "$config" --data $data/train --exp $exp $resume
  fi
fi

if stage 4 "embeddings of the dev and training utterances"; then
  require $exp/model.pt -- "run stage 3 first (--stage 3)"
  $SPEAKERID extract --exp $exp --data $data/dev --out $exp/emb_dev --no-progress
  $SPEAKERID extract --exp $exp --data $data/train --out $exp/emb_train --no-progress
fi

if stage 5 "AS-norm cohort: training-speaker mean embeddings -> $exp/cohort.npz"; then
  require $exp/emb_train/embeddings.npz -- "run stage 4 first (--stage 4)"
  $PYTHON local/make_cohort.py $exp/emb_train $data/train/utt2spk $exp/cohort.npz --max-speakers 400
fi

if stage 6 "AS-norm'd cosine scores of the dev trials, calibration, EER/minDCF"; then
  require $exp/emb_dev/embeddings.npz $exp/cohort.npz -- "run stages 4-5 first"
  $SPEAKERID score --trials $data/dev/trials --embeddings $exp/emb_dev --cohort $exp/cohort.npz \
    --norm asnorm --top-k 300 --output $exp/scores_dev.txt
  $SPEAKERID calibrate --scores $exp/scores_dev.txt --score-kind asnorm --output $exp/calibration.json
  $SPEAKERID eval --scores $exp/scores_dev.txt --json > $exp/dev_eval.json
  $SPEAKERID eval --scores $exp/scores_dev.txt --det $exp/det_dev.png | tee $exp/results_dev.txt
fi

if stage 7 "benchmark: starter vs Resemblyzer 0.1.4 on the same dev trials, per corpus"; then
  require $exp/emb_dev/embeddings.npz -- "run stage 4 first (--stage 4)"
  # the same model on the untrimmed dev audio: what silence trimming is worth
  $SPEAKERID extract --exp $exp --data $raw/dev --out $exp/emb_dev_notrim --no-progress
  $PYTHON "$repo/benchmarks/bench_starter.py" --data $raw/dev --system starter=$exp/emb_dev \
    --system starter_untrimmed=$exp/emb_dev_notrim \
    --cohort starter=$exp/cohort.npz --resemblyzer-cache "${RESEMBLYZER_CACHE:-$exp/resemblyzer_dev.npz}" \
    --out "$repo/benchmarks/results_starter.md"
fi

if stage 8 "package -> $package"; then
  require $exp/model.pt $exp/config.yaml $exp/calibration.json $exp/dev_eval.json $exp/cohort.npz -- "run stages 3-6 first"
  $PYTHON local/package.py $exp "$package" --split $raw/split_summary.txt \
    --bench "$repo/benchmarks/results_starter.md"
fi
log "done in $((SECONDS - start_time)) s"
