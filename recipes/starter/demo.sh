#!/usr/bin/env bash
# The main job on the packaged starter model, nothing downloaded: enroll two speakers from the
# example clips that ship with the package (speakerid/pretrained/examples/ATTRIBUTION.md), then
# verify a genuine and an impostor claim, and identify who speaks in a test clip.
# Usage: bash recipes/starter/demo.sh [WORKDIR]   (default: a new temporary folder)
set -euo pipefail
work=${1:-$(mktemp -d)}
mkdir -p "$work"
db="$work/speakers.db"
rm -f "$db"
ex=$(python -c "from speakerid.pretrained import examples_dir; print(examples_dir())")
run() { echo "+ $*" | sed "s#$ex/##g; s#$work/##g"; "$@"; }

run speakerid enroll --db "$db" --speaker A "$ex/speaker_a_1.flac" "$ex/speaker_a_2.flac"
run speakerid enroll --db "$db" --speaker B "$ex/speaker_b_1.flac" "$ex/speaker_b_2.flac"
run speakerid list --db "$db"
# verify: exit 0 = accept, 1 = reject, 2 = error. --p-target 0.5 (a genuine claim as likely as
# an impostor's) puts the threshold at LLR 0; the default 0.01 (threshold LLR 4.6) is a security
# setting that the small starter model's calibrated scores rarely reach (see its MODEL_CARD.md).
run speakerid verify --db "$db" --speaker A --p-target 0.5 "$ex/speaker_a_test.flac" || true
run speakerid verify --db "$db" --speaker A --p-target 0.5 "$ex/speaker_b_test.flac" || true
run speakerid identify --db "$db" --top-k 2 --p-target 0.5 "$ex/speaker_b_test.flac"
