#!/usr/bin/env bash
# The speakerid demo: nothing to download, CPU only, a few minutes on 2 cores.
#
#   synthetic corpus -> fbank features -> train a small ECAPA-TDNN with Circle Loss
#   (SpecAugment + MixUp) -> extract embeddings -> cosine scoring -> calibration ->
#   EER / minDCF / actDCF / Cllr + DET plot -> enrol/verify/identify demo -> TorchScript export
#
# Data: a synthetic source-filter corpus (data_prep/synthetic.py). Training speakers and the
# dev speakers (used for the per-epoch EER, the decision threshold and the calibration) come
# from seed 0; the TEST speakers are a separate corpus (seed 1): the reported EER is on
# voices that neither training nor calibration saw.
#
# Usage: bash recipes/mini/run.sh [--stage N] [--stop-stage M] [--nj N]   (from any directory)
# Outputs: recipes/mini/data/ and recipes/mini/exp/ (both gitignored).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
source "$repo/recipes/utils/lib.sh"
parse_common_options "$@"
if [ ${#REST_ARGS[@]} -gt 0 ]; then echo "unknown option(s): ${REST_ARGS[*]}" >&2; usage >&2; exit 2; fi
cd "$here"

config=conf/ecapa_circle.yaml
data=data
exp=exp/ecapa_circle
# corpus sizes: 64 training + 16 dev speakers (12 utterances each), 20 test speakers
train_speakers=80; train_utts=12; dev_speakers=16
test_speakers=20; test_utts=10
trials=2000

start_time=$SECONDS

if stage 0 "synthetic corpora -> $data/synth/{train,dev} (seed 0), $data/test (seed 1)"; then
  if [ -s $data/synth/dev/trials ] && [ -s $data/synth/train/wav.scp ]; then
    log "$data/synth already there (delete it to regenerate)"
  else
    $PYTHON "$repo/data_prep/synthetic.py" $data/synth --force --seed 0 \
      --speakers $train_speakers --utts $train_utts --dev-speakers $dev_speakers --make-trials $trials
  fi
  if [ -s $data/test/trials ]; then
    log "$data/test already there"
  else
    $PYTHON "$repo/data_prep/synthetic.py" $data/test --force --seed 1 \
      --speakers $test_speakers --utts $test_utts --make-trials $trials
  fi
fi

if stage 1 "fbank features of the training data (cached as Kaldi ark/scp)"; then
  require $data/synth/train/wav.scp -- "run stage 0 first (bash recipes/mini/run.sh --stage 0)"
  $SPEAKERID features --data $data/synth/train --config $config --nj "$nj" --no-progress
fi

if stage 2 "train ECAPA-TDNN with Circle Loss -> $exp"; then
  require $data/synth/train/feats.scp -- "run stage 1 first (--stage 1)"
  require $data/synth/dev/trials -- "run stage 0 first (--stage 0)"
  if [ -s $exp/model.pt ]; then
    log "$exp/model.pt exists: training skipped (delete $exp to retrain)"
  else
    resume=""
    if ls $exp/checkpoints/epoch_*.pt >/dev/null 2>&1; then resume="--resume"; log "resuming from $exp/checkpoints"; fi
    $SPEAKERID train --config $config --data $data/synth/train --exp $exp $resume \
      --set dev_data=$data/synth/dev --set dev_trials=$data/synth/dev/trials
  fi
fi

if stage 3 "extract embeddings of the dev and test utterances"; then
  require $exp/model.pt $exp/config.yaml -- "run the train stage first (--stage 2)"
  for set in dev test; do
    src=$data/synth/dev; [ $set = test ] && src=$data/test
    require $src/wav.scp -- "run stage 0 first (--stage 0)"
    $SPEAKERID extract --exp $exp --data $src --out $exp/emb_$set --no-progress
  done
fi

if stage 4 "cosine scoring of the dev and test trials"; then
  for set in dev test; do
    src=$data/synth/dev; [ $set = test ] && src=$data/test
    require $exp/emb_$set/embeddings.npz -- "run the extract stage first (--stage 3)"
    $SPEAKERID score --trials $src/trials --embeddings $exp/emb_$set --output $exp/scores_$set.txt
  done
fi

if stage 5 "calibration: fit score -> LLR on dev, apply to test"; then
  require $exp/scores_dev.txt $exp/scores_test.txt -- "run the scoring stage first (--stage 4)"
  # fit on RAW cosine dev scores: the enrolment DB (speakerid verify) applies it to raw cosines
  $SPEAKERID calibrate --scores $exp/scores_dev.txt --output $exp/calibration.json
  $SPEAKERID calibrate --apply $exp/calibration.json --scores $exp/scores_test.txt --output $exp/scores_test.llr
fi

if stage 6 "evaluation on the test speakers (EER, minDCF; actDCF, Cllr) + DET plot"; then
  require $exp/scores_test.txt $exp/scores_test.llr -- "run stages 4 and 5 first (--stage 4)"
  $SPEAKERID eval --scores $exp/scores_test.llr --calibrated --det $exp/det_test.png --hist $exp/hist_test.png \
    | tee $exp/results_test.txt
  log "DET curve: $here/$exp/det_test.png"
fi

if stage 7 "enrolment demo: enrol a test speaker, verify a target and an impostor, identify"; then
  require $exp/model.pt -- "run the train stage first (--stage 2)"
  require $data/test/spk2utt -- "run stage 0 first (--stage 0)"
  db=$exp/speakers.db
  rm -f $db $db-wal $db-shm
  # the first two test speakers: enrol 3 files each; test with a file not enrolled
  read -r spk_a a1 a2 a3 a4 _ < <(sed -n 1p $data/test/spk2utt)
  read -r spk_b b1 b2 b3 b4 _ < <(sed -n 2p $data/test/spk2utt)
  wav() { awk -v u="$1" '$1 == u { print $2 }' $data/test/wav.scp; }
  $SPEAKERID enroll --model $exp --db $db --speaker "$spk_a" "$(wav $a1)" "$(wav $a2)" "$(wav $a3)"
  $SPEAKERID enroll --model $exp --db $db --speaker "$spk_b" "$(wav $b1)" "$(wav $b2)" "$(wav $b3)"
  $SPEAKERID enroll --db $db --list
  # verify exits 1 on "reject": that is an answer here, not a failure. A claimed identity is
  # about as likely true as not, so decide at P_target = 0.5 (LLR >= 0); the default 0.01
  # (threshold LLR 4.6) suits a search among many impostors.
  $SPEAKERID verify --model $exp --db $db --p-target 0.5 --speaker "$spk_a" "$(wav $a4)" || true
  $SPEAKERID verify --model $exp --db $db --p-target 0.5 --speaker "$spk_a" "$(wav $b4)" || true
  $SPEAKERID identify --model $exp --db $db --top-k 2 "$(wav $b4)"
fi

if stage 8 "export the waveform -> embedding model as TorchScript"; then
  require $exp/model.pt -- "run the train stage first (--stage 2)"
  $SPEAKERID export --model $exp --out $exp/embedder.ts
fi

if [ -s $exp/results_test.txt ] && [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo
  echo "== mini recipe: test speakers (unseen in training and calibration) =="
  cat $exp/results_test.txt
  [ -s $exp/dev_eval.json ] && echo "dev (seen by calibration/threshold): $(tr -d '\n ' < $exp/dev_eval.json)"
  echo "DET plot: $here/$exp/det_test.png"
fi
log "done in $((SECONDS - start_time)) s"
