#!/usr/bin/env bash
# VoxCeleb recipe: train on VoxCeleb2 dev, evaluate on VoxCeleb1-O/E/H (cleaned lists), on GPUs.
#
#   0 data dirs (vox2 dev for training, all of vox1 for testing, the three trial lists)
#   1 MUSAN + RIR lists for on-the-fly augmentation      2 webdataset shards (optional, --shards)
#   3 torchrun training (checkpoint averaging: model.pt = mean of the last K epochs)
#   4 embeddings of vox1 and of the vox2 dev cohort       5 cosine + AS-norm scoring of O/E/H
#   6 calibration (fit on Vox1-E raw cosine, applied to O/H) and evaluation + DET plots
#   7 large-margin fine-tuning (--init-from), then stages 4-6 again on it     8 export
#
# Usage: bash recipes/voxceleb/run.sh --vox1 DIR --vox2 DIR --musan DIR --rirs DIR --lists DIR
#          [--system resnet34_circle|ecapa_c1024_circle|campplus_circle|redimnet_b2_circle|resnet34_aam|ecapa_c1024_aam|campplus_aam|redimnet_b2_aam]
#          [--gpus 8] [--shards] [--set KEY=VALUE ...] [--stage N] [--stop-stage M] [--nj 16]
# --set overrides a training config value (both training stages), e.g. --set data.num_workers=4
# --lists holds veri_test2.txt, list_test_all2.txt, list_test_hard2.txt (cleaned trial lists).
# VoxCeleb2 ships AAC (.m4a): convert it to wav once (ffmpeg), or have ffmpeg on the PATH.
# See README.md for the peer results this recipe aims at (targets, not measured here).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
nj=16
source "$repo/recipes/utils/lib.sh"
parse_common_options "$@"

vox1=""; vox2=""; musan=""; rirs=""; lists=""; system=resnet34_circle; gpus=8; shards=false; overrides=()
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
while [ $# -gt 0 ]; do
  case "$1" in
    --vox1) vox1=$2; shift 2 ;;
    --vox2) vox2=$2; shift 2 ;;
    --musan) musan=$2; shift 2 ;;
    --rirs) rirs=$2; shift 2 ;;
    --lists) lists=$2; shift 2 ;;
    --system) system=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    --shards) shards=true; shift ;;
    --set) overrides+=(--set "$2"); shift 2 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
abspath() { [ -z "$1" ] && return 0; (cd "$1" && pwd); }
vox1=$(abspath "$vox1"); vox2=$(abspath "$vox2"); musan=$(abspath "$musan"); rirs=$(abspath "$rirs"); lists=$(abspath "$lists")
cd "$here"
config=conf/$system.yaml
lm_config=conf/${system}_lm.yaml
require "$config" -- "unknown --system $system (see conf/)"
exp=exp/$system
exp_lm=exp/${system}_lm
train_cmd="torchrun --standalone --nproc_per_node=$gpus -m speakerid"
declare -A trial_lists=([vox1_O]=veri_test2 [vox1_E]=list_test_all2 [vox1_H]=list_test_hard2)

need_opt() { [ -n "$2" ] || { echo "ERROR: stage $3 needs $1 DIR" >&2; exit 2; }; }

if stage 0 "data dirs: data/vox2_dev (training), data/vox1 (test, trials O/E/H)"; then
  need_opt --vox2 "$vox2" 0; need_opt --vox1 "$vox1" 0; need_opt --lists "$lists" 0
  require "$lists/veri_test2.txt" "$lists/list_test_all2.txt" "$lists/list_test_hard2.txt" -- \
    "download the cleaned VoxCeleb1 trial lists into --lists"
  $PYTHON "$repo/data_prep/voxceleb.py" "$vox2" data/vox2_dev --min-duration 1.0 --jobs "$nj"
  $PYTHON "$repo/data_prep/voxceleb.py" "$vox1" data/vox1 --jobs "$nj" \
    --trials "$lists/veri_test2.txt" --trials "$lists/list_test_all2.txt" --trials "$lists/list_test_hard2.txt"
fi

if stage 1 "augmentation lists: data/musan.list, data/rir.list"; then
  need_opt --musan "$musan" 1; need_opt --rirs "$rirs" 1
  $PYTHON "$repo/data_prep/musan.py" "$musan" data/musan.list --jobs "$nj"
  $PYTHON "$repo/data_prep/rirs.py" "$rirs" data/rir.list --jobs "$nj"
fi

if $shards && stage 2 "webdataset shards of the training data"; then
  require data/vox2_dev/wav.scp -- "run stage 0 first (--stage 0)"
  $SPEAKERID shards --data data/vox2_dev --out data/vox2_dev_shards --utts-per-shard 1000 --num-workers "$nj"
fi

if stage 3 "train $system on $gpus GPU(s) -> $exp"; then
  require data/vox2_dev/wav.scp -- "run stage 0 first (--stage 0)"
  require data/musan.list data/rir.list -- "run stage 1 first (--stage 1)"
  extra=()
  $shards && { require data/vox2_dev_shards/shards.list -- "run stage 2 first (--stage 2 --shards)"; extra+=(--set "data.shards=data/vox2_dev_shards/shard-*.tar"); }
  resume=""; ls $exp/checkpoints/epoch_*.pt >/dev/null 2>&1 && resume="--resume"
  $train_cmd train --config "$config" --data data/vox2_dev --exp $exp $resume ${extra[@]+"${extra[@]}"} \
    ${overrides[@]+"${overrides[@]}"}
fi

# stages 4-6 run for one experiment dir; stage 7 reuses them for the large-margin model
embed_score_eval() {
  local e=$1
  if stage 4 "embeddings of vox1 and of the vox2 dev cohort ($e)"; then
    require $e/model.pt $e/config.yaml -- "run the train stage first (--stage 3, or 7 for the LM model)"
    require data/vox1/wav.scp data/vox2_dev/wav.scp -- "run stage 0 first (--stage 0)"
    $train_cmd extract --exp $e --data data/vox1 --out $e/emb_vox1 --num-workers 4
    $train_cmd extract --exp $e --data data/vox2_dev --out $e/emb_vox2_dev --num-workers 4 --format npz
    $PYTHON local/speaker_means.py data/vox2_dev $e/emb_vox2_dev/embeddings.npz $e/cohort_vox2_spk.npz
  fi
  if stage 5 "cosine and AS-norm scoring of Vox1-O/E/H ($e)"; then
    require $e/emb_vox1/embeddings.npz $e/cohort_vox2_spk.npz -- "run the extract stage first (--stage 4)"
    local name
    for name in vox1_O vox1_E vox1_H; do
      $SPEAKERID score --trials data/vox1/trials_${trial_lists[$name]} --embeddings $e/emb_vox1 \
        --subtract-mean $e/cohort_vox2_spk.npz --output $e/scores_$name.cos
      $SPEAKERID score --trials data/vox1/trials_${trial_lists[$name]} --embeddings $e/emb_vox1 \
        --subtract-mean $e/cohort_vox2_spk.npz --cohort $e/cohort_vox2_spk.npz --norm asnorm --top-k 300 \
        --output $e/scores_$name.asnorm
    done
  fi
  if stage 6 "calibration (Vox1-E) and evaluation ($e)"; then
    require $e/scores_vox1_E.cos -- "run the scoring stage first (--stage 5)"
    # fit on raw cosine scores of Vox1-E: speakerid verify applies it to raw cosines (of
    # mean-subtracted embeddings here; without the mean the LLR is a little off)
    $SPEAKERID calibrate --scores $e/scores_vox1_E.cos --output $e/calibration.json
    local name kind
    for name in vox1_O vox1_E vox1_H; do
      for kind in cos asnorm; do
        echo "== $e $name $kind"
        $SPEAKERID eval --scores $e/scores_$name.$kind --det $e/det_${name}_$kind.png | tee $e/results_${name}_$kind.txt
      done
    done
  fi
}

embed_score_eval $exp

if stage 7 "large-margin fine-tuning -> $exp_lm"; then
  require $exp/model.pt -- "run the train stage first (--stage 3)"
  require "$lm_config" -- "no large-margin config for $system"
  resume=""; ls $exp_lm/checkpoints/epoch_*.pt >/dev/null 2>&1 && resume="--resume"
  $train_cmd train --config "$lm_config" --data data/vox2_dev --exp $exp_lm --init-from $exp $resume \
    ${overrides[@]+"${overrides[@]}"}
  (stage=4 stop_stage=6; embed_score_eval $exp_lm)
fi

if stage 8 "export TorchScript and ONNX"; then
  final=$exp; [ -s $exp_lm/model.pt ] && final=$exp_lm
  $SPEAKERID export --model $final --out $final/embedder.ts
  $SPEAKERID export --model $final --out $final/embedder.onnx || log "ONNX export failed (see the error above; it needs: pip install onnx onnxscript onnxruntime)"
fi
