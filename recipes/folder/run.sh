#!/usr/bin/env bash
# Train and evaluate on any folder-per-speaker tree (<speaker>/**/<utt>.wav|flac|mp3).
#
#   folder -> speaker-disjoint train/dev split + within-corpus dev trials -> fbank features ->
#   ECAPA-TDNN + Circle Loss -> embeddings -> cosine scoring -> calibration -> EER/minDCF + DET
#
# Usage: bash recipes/folder/run.sh --data DIR [--name NAME] [--dev-fraction 0.2]
#          [--group-by-prefix | --no-groups] [--trials 4000] [--config conf/ecapa_circle.yaml]
#          [--stage N] [--stop-stage M] [--nj N]
# Speaker ids whose prefix before "_" names a corpus (ravdess_01, libri_1234, ...) are grouped by
# it (--group-by-prefix, the default): the dev split is stratified by group and non-target
# trials pair speakers of one corpus only (across corpora the channel alone gives the answer).
# The reported EER is on the dev speakers, which the calibration is also fit on.
# Outputs: recipes/folder/data/NAME and recipes/folder/exp/NAME (NAME: the folder's name).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
source "$repo/recipes/utils/lib.sh"
parse_common_options "$@"

src=""; name=""; dev_fraction=0.2; groups="--group-by-prefix"; trials=4000; config=conf/ecapa_circle.yaml
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
while [ $# -gt 0 ]; do
  case "$1" in
    --data) src=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --dev-fraction) dev_fraction=$2; shift 2 ;;
    --group-by-prefix) groups="--group-by-prefix"; shift ;;
    --no-groups) groups=""; shift ;;
    --trials) trials=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$src" ] || { echo "ERROR: --data DIR is required" >&2; usage >&2; exit 2; }
[ -d "$src" ] || { echo "ERROR: --data $src: not a directory" >&2; exit 2; }
src=$(cd "$src" && pwd)          # absolute: we cd into the recipe dir below
case "$config" in /*) ;; *) [ -e "$config" ] && config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config") ;; esac
name=${name:-$(basename "$src")}
cd "$here"
data=data/$name
exp=exp/$name
start_time=$SECONDS

if stage 0 "data dir of $src -> $data/{train,dev} (speaker-disjoint, dev trials)"; then
  if [ -s $data/dev/trials ] && [ -s $data/train/wav.scp ]; then
    log "$data already there (delete it to redo the split)"
  else
    $PYTHON "$repo/data_prep/folder.py" "$src" $data --force --seed 0 \
      --dev-fraction "$dev_fraction" --make-trials "$trials" $groups
  fi
fi

if stage 1 "fbank features of the training data"; then
  require $data/train/wav.scp -- "run stage 0 first (--stage 0)"
  $SPEAKERID features --data $data/train --config "$config" --nj "$nj" --no-progress
fi

if stage 2 "train -> $exp"; then
  require $data/train/feats.scp -- "run stage 1 first (--stage 1)"
  require $data/dev/trials -- "run stage 0 first (--stage 0)"
  if [ -s $exp/model.pt ]; then
    log "$exp/model.pt exists: training skipped (delete $exp to retrain)"
  else
    resume=""
    if ls $exp/checkpoints/epoch_*.pt >/dev/null 2>&1; then resume="--resume"; fi
    $SPEAKERID train --config "$config" --data $data/train --exp $exp $resume \
      --set dev_data=$data/dev --set dev_trials=$data/dev/trials
  fi
fi

if stage 3 "extract dev embeddings"; then
  require $exp/model.pt $exp/config.yaml -- "run the train stage first (--stage 2)"
  $SPEAKERID extract --exp $exp --data $data/dev --out $exp/emb_dev --no-progress
fi

if stage 4 "cosine scoring of the dev trials"; then
  require $exp/emb_dev/embeddings.npz -- "run the extract stage first (--stage 3)"
  $SPEAKERID score --trials $data/dev/trials --embeddings $exp/emb_dev --output $exp/scores_dev.txt
fi

if stage 5 "calibration (fit on dev raw cosine scores; used by speakerid verify)"; then
  require $exp/scores_dev.txt -- "run the scoring stage first (--stage 4)"
  $SPEAKERID calibrate --scores $exp/scores_dev.txt --output $exp/calibration.json
fi

if stage 6 "evaluation (EER, minDCF) + DET plot"; then
  require $exp/scores_dev.txt -- "run the scoring stage first (--stage 4)"
  $SPEAKERID eval --scores $exp/scores_dev.txt --det $exp/det_dev.png --hist $exp/hist_dev.png | tee $exp/results_dev.txt
  log "DET curve: $here/$exp/det_dev.png"
fi
log "done in $((SECONDS - start_time)) s"
