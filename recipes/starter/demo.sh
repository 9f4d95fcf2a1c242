#!/usr/bin/env bash
# The main job on the packaged starter model (the small model trained here), nothing downloaded:
# recipes/pretrained/demo.sh with --model starter. --p-target 0.5 (a genuine claim as likely as an
# impostor's) puts the threshold at LLR 0: the starter's calibration has no measured operating
# point, and the default P_target 0.01 is one its scores rarely reach (see its MODEL_CARD.md).
# Usage: bash recipes/starter/demo.sh [WORKDIR]   (default: a new temporary folder)
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../pretrained/demo.sh" --model starter --p-target 0.5 "$@"
