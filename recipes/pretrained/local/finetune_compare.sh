#!/usr/bin/env bash
# Fine-tuning comparison for the default model (issue 15, part 3): CAM++ as imported against CAM++
# fine-tuned from it (speakerid train --init) with pair Circle Loss and with AAM + a large margin,
# each with and without the waveform augmentation chain, on the licensed training speakers of the
# starter split; every variant embeds the dev split and benchmarks/bench_starter.py scores them per
# corpus in one run (EER, minDCF). Run after stages 0-2 of recipes/pretrained/run.sh, from its dir:
#
#   cd recipes/pretrained && bash local/finetune_compare.sh [--variants "circle aam_lm ..."] [--epochs N]
#
# Outputs: exp/finetune_<variant>/ (model.pt, emb_dev/), benchmarks/results_finetune.md.
# On 2 CPU cores a variant takes hours (CAM++ training steps); the figures in
# benchmarks/results_finetune.md were trained on a GPU (see that file for how).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repo=$(cd "$here/../.." && pwd)
variants="circle circle_waveaug aam_lm aam_lm_waveaug"
epochs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --variants) variants=$2; shift 2 ;;
    --epochs) epochs="--set epochs=$2"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
cd "$here"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SPEAKERID=${SPEAKERID:-python -m speakerid}
train=data/speech/train dev=data/speech/dev
for f in exp/campplus/model.pt $train/wav.scp $dev/trials; do
  [ -e "$f" ] || { echo "ERROR: $f: missing; run stages 0-2 of recipes/pretrained/run.sh first" >&2; exit 2; }
done
# noise / RIR lists for the augmented variants (the starter recipe's format)
python "$repo/data_prep/musan.py" "${SPEAKERID_SHARED_DATA:-$repo/../shared/data}/noise" data/noise.list --category noise --force
python "$repo/data_prep/rirs.py" "${SPEAKERID_SHARED_DATA:-$repo/../shared/data}/rir" data/rir.list --force
systems="--system imported=exp/campplus/emb_dev"
for v in $variants; do
  exp=exp/finetune_$v
  [ -s $exp/model.pt ] || $SPEAKERID train --config conf/finetune_$v.yaml --data $train --exp $exp --init exp/campplus \
      --set augment.noise.noise_list=data/noise.list --set augment.reverb.rir_list=data/rir.list $epochs
  $SPEAKERID extract --exp $exp --data $dev --out $exp/emb_dev --no-progress
  systems="$systems --system finetune_$v=$exp/emb_dev"
done
[ -s exp/campplus/emb_dev/embeddings.npz ] || $SPEAKERID extract --exp exp/campplus --data $dev --out exp/campplus/emb_dev --no-progress
python "$repo/benchmarks/bench_starter.py" --data $dev $systems --no-resemblyzer --out "$repo/benchmarks/results_finetune.md"
