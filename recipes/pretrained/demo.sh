#!/usr/bin/env bash
# The main job with the default model (packaged `campplus`: 3D-Speaker's CAM++, calibrated here),
# nothing downloaded: enroll two speakers from the example clips that ship with the package
# (speakerid/pretrained/examples/ATTRIBUTION.md), verify a genuine and an impostor claim at the
# DEFAULT decision, and identify who speaks in a test clip.
# Usage: bash recipes/pretrained/demo.sh [--model NAME|EXP] [--p-target P] [WORKDIR]
#   (WORKDIR default: a new temporary folder; recipes/starter/demo.sh runs it with --model starter)
set -euo pipefail
model=() decision=() work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=(--model "$2"); shift 2 ;;
    --p-target) decision=(--p-target "$2"); shift 2 ;;
    *) work=$1; shift ;;
  esac
done
work=${work:-$(mktemp -d)}
mkdir -p "$work"
db="$work/speakers.db"
rm -f "$db"
ex=$(python -c "from speakerid.pretrained import examples_dir; print(examples_dir())")
run() { echo "+ $*" | sed "s#$ex/##g; s#$work/##g"; "$@"; }

run speakerid enroll ${model[@]+"${model[@]}"} --db "$db" --speaker A "$ex/speaker_a_1.flac" "$ex/speaker_a_2.flac"
run speakerid enroll ${model[@]+"${model[@]}"} --db "$db" --speaker B "$ex/speaker_b_1.flac" "$ex/speaker_b_2.flac"
run speakerid list --db "$db"
# verify: exit 0 = accept, 1 = reject, 2 = error. The default decision is the model's measured
# operating point (`speakerid verify --help`; campplus: 1 % false accepts on its dev trials).
for clip in speaker_a_test speaker_b_test; do
  run speakerid verify ${model[@]+"${model[@]}"} --db "$db" --speaker A ${decision[@]+"${decision[@]}"} "$ex/$clip.flac" || true
done
run speakerid identify ${model[@]+"${model[@]}"} --db "$db" --top-k 2 ${decision[@]+"${decision[@]}"} "$ex/speaker_b_test.flac"
