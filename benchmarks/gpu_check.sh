#!/usr/bin/env bash
# One-shot GPU check: on a fresh CUDA machine holding only this repository, install what is missing, run the
# gpu-marked tests and the GPU benchmarks with random weights, and leave everything in one results folder.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--wheels DIR] [--budget SECONDS]
#   bash benchmarks/gpu_check.sh --dry-run [--out DIR]      # the same steps on the CPU, tiny sizes (CI runs this)
#
# Install: a virtual environment ($GPU_CHECK_VENV, default $TMPDIR/stvg-edge-gpu-check-venv) that sees the machine's own torch / torchvision / transformers
# (--system-site-packages: a CUDA image brings its own builds; pip must not replace them), then this package with
# `pip install -e .` under .ci/constraints.txt minus its torch lines. --wheels DIR installs from a folder of wheels
# only (no index: for machines without internet). --dry-run installs nothing and uses the current interpreter.
#
# Steps (each under its own time limit; a failed step is recorded and the next one runs), results in DIR:
#   doctor.txt            stvg-edge doctor
#   pytest_gpu.txt        python -m pytest -m gpu
#   tracker_objects.json  SAM2.1/EdgeTAM batched vs one-by-one propagation at real sizes, 1/5/10/20 objects
#   engine_decode.json    static engine vs generate, bf16/fp32, int8/int4, Qwen2.5-VL-7B widths cut to 4 layers
#   e2e_latency.json      full precision vs optimized bundle, Qwen2.5-VL-7B at full depth, a 20 s 720p clip
#   summary.json          every step's command, exit code and seconds
# The whole run is sized for about 8 minutes of wall time (--budget, default 480 s, split over the steps).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="benchmarks/results/gpu_check"
WHEELS=""
DRY_RUN=0
BUDGET=480
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (use --out DIR, --wheels DIR, --budget SECONDS, --dry-run)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
STARTED=$(date +%s)

# ------------------------------------------------------------------------------------------------ install
if [ "$DRY_RUN" -eq 1 ]; then
  PY="${PYTHON:-python}"
else
  VENV="${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/stvg-edge-gpu-check-venv}"
  python3 -m venv --system-site-packages "$VENV" || exit 1
  PY="$VENV/bin/python"
  grep -v -E '^(torch|torchvision|torchaudio|triton|nvidia-)' .ci/constraints.txt > "$VENV/constraints.txt"
  if [ -n "$WHEELS" ]; then
    "$PY" -m pip install --no-index --find-links "$WHEELS" -c "$VENV/constraints.txt" -e . > "$OUT/install.txt" 2>&1
  else
    "$PY" -m pip install -c "$VENV/constraints.txt" -e . > "$OUT/install.txt" 2>&1
  fi || {
    # no index and no wheels (a machine without internet): the package itself, on what the machine has; a step
    # that needs a missing package fails on its own and says so in its log
    echo "gpu_check.sh: installing the dependencies failed (see $OUT/install.txt): going on without them" >&2
    "$PY" -m pip install --no-deps --no-build-isolation -e . >> "$OUT/install.txt" 2>&1 || exit 1
  }
fi

# ------------------------------------------------------------------------------------------------ steps
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log its output, record how it ended
  local name="$1" limit="$2"
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "[gpu_check] $name (limit ${limit} s): $*" >&2
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$*" >> "$SUMMARY"
  [ "$rc" -eq 0 ] || echo "[gpu_check] $name ended with exit code $rc (see $OUT/$name.log)" >&2
}
share() { echo $(( BUDGET * $1 / 100 )); }  # a percentage of the budget, in seconds

if [ "$DRY_RUN" -eq 1 ]; then
  DEVICE=cpu
  step doctor "$(share 10)" "$PY" -m stvgr1_edge doctor
  step pytest_gpu "$(share 20)" "$PY" -m pytest -q -m gpu -p no:cacheprovider
  step tracker_objects "$(share 25)" "$PY" benchmarks/tracker_objects.py --sizes tiny --families sam2 \
    --objects 1 5 --frames 2 --warmup 1 --device cpu --out "$OUT/tracker_objects.json"
  step engine_decode "$(share 25)" "$PY" benchmarks/engine_decode.py --quick --no-compile \
    --out "$OUT/engine_decode.json"
  step e2e_latency "$(share 40)" "$PY" benchmarks/e2e_latency.py --arch nano --seconds 2 --height 96 --width 128 \
    --device cpu --workdir "$OUT/e2e_work" --out "$OUT/e2e_latency.json"
  rm -rf "$OUT/e2e_work"
else
  DEVICE=cuda
  step doctor 60 "$PY" -m stvgr1_edge doctor
  step pytest_gpu "$(share 20)" "$PY" -m pytest -q -m gpu -p no:cacheprovider
  step tracker_objects "$(share 15)" "$PY" benchmarks/tracker_objects.py --sizes real --device cuda \
    --out "$OUT/tracker_objects.json"
  step engine_decode "$(share 20)" "$PY" benchmarks/engine_decode.py --arch 7b --layers 4 \
    --configs hf-bf16 engine-bf16 engine-int8 engine-int4-g128 --compile-processes 0 --out "$OUT/engine_decode.json"
  step e2e_latency "$(share 40)" "$PY" benchmarks/e2e_latency.py --arch 7b --seconds 20 --device cuda \
    --columns full optimized --workdir "$OUT/e2e_work" --out "$OUT/e2e_latency.json"
  rm -rf "$OUT/e2e_work"  # the 7B checkpoint and bundle: tens of GB
fi

# ------------------------------------------------------------------------------------------------ summary
"$PY" - "$SUMMARY" "$OUT/summary.json" "$DEVICE" "$(( $(date +%s) - STARTED ))" <<'EOF'
import json, platform, sys

rows = [line.rstrip("\n").split("\t", 3) for line in open(sys.argv[1]) if line.strip()]
steps = [{"step": n, "exit_code": int(rc), "seconds": int(s), "command": c} for n, rc, s, c in rows]
try:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
except ImportError:
    gpu, versions = None, {}
summary = {"device": sys.argv[3], "gpu": gpu, "python": platform.python_version(), "versions": versions,
           "wall_s": int(sys.argv[4]), "steps": steps, "all_passed": all(s["exit_code"] == 0 for s in steps)}
json.dump(summary, open(sys.argv[2], "w"), indent=1)
print(json.dumps({k: summary[k] for k in ("device", "gpu", "wall_s", "all_passed")}))
EOF
PASSED=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["all_passed"]))' "$OUT/summary.json")
rm -f "$SUMMARY"
[ "$PASSED" = "1" ]
