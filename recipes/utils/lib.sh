# Shared helpers of the recipes (sourced by every run.sh; bash, set -euo pipefail already on).
#
#   parse_common_options "$@"   handles --stage N --stop-stage M --nj N --help, leaves the rest
#                               in REST_ARGS for the recipe's own options
#   stage N "title"             true when stage N is selected (and prints a banner)
#   require PATH... -- "hint"   exit 1 with "missing PATH: <hint>" when a path is absent
#
# PYTHON (default: python) and SPEAKERID (default: $PYTHON -m speakerid) can be overridden
# from the environment, e.g. SPEAKERID="torchrun --nproc_per_node=4 -m speakerid".

PYTHON=${PYTHON:-python}
SPEAKERID=${SPEAKERID:-"$PYTHON -m speakerid"}
stage=${stage:-0}
stop_stage=${stop_stage:-100}
nj=${nj:-2}
REST_ARGS=()

parse_common_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --stage) stage=$2; shift 2 ;;
      --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
      --nj) nj=$2; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) REST_ARGS+=("$1"); shift ;;
    esac
  done
}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

stage() {
  local n=$1; shift
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    log "=== stage $n: $*"
    return 0
  fi
  return 1
}

# require PATH... -- "what to run": every stage checks its inputs before doing anything.
require() {
  local paths=() hint=""
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then hint=$2; break; fi
    paths+=("$1"); shift
  done
  local p
  for p in "${paths[@]}"; do
    if [ ! -e "$p" ]; then
      echo "ERROR: missing $p: $hint" >&2
      exit 1
    fi
  done
}
