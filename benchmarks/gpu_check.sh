#!/usr/bin/env bash
# One-shot GPU check: on a fresh CUDA machine holding only this repository, install what is missing, run the
# gpu-marked tests and the GPU benchmarks with random weights, and leave everything in one results folder.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--wheels DIR] [--budget SECONDS] [--steps "NAME ..."]
#   bash benchmarks/gpu_check.sh --dry-run [--out DIR]      # the same steps on the CPU, tiny sizes (CI runs this)
#
# Install: a virtual environment ($GPU_CHECK_VENV, default $TMPDIR/stvg-edge-gpu-check-venv) that sees the packages of
# the machine's python3 (a CUDA image brings its own torch / torchvision builds; pip must not replace them): the new
# environment loads python3's site-packages after its own (`site.addsitedir` in a .pth, which also works where python3
# is itself a virtual environment, whose packages --system-site-packages would not see). Then this package with
# `pip install -e .` under .ci/constraints.txt minus its torch lines. --wheels DIR (machines without internet):
# DIR's wheels and this package with --no-deps, on top of what the machine has (a pin the machine does not meet
# is not enforced there; install.txt lists the versions that ran). --dry-run installs nothing and uses the current
# interpreter.
#
# Steps (each under its own time limit; a failed step is recorded and the next one runs), results in DIR:
#   doctor.log            stvg-edge doctor
#   pytest_gpu.log        python -m pytest -m gpu
#   int4_prefill_rows.json  int4 kernel vs dequantize + dense matmul over 1..4096 input rows, 7B MLP shapes
#   engine_decode.json    static engine vs generate, fp32/bf16 and int4, Qwen2.5-VL-7B widths cut to 4 layers
#   e2e_latency.json      full precision (bf16, generate) vs quantized (int4, static engine), Qwen2.5-VL-7B at full
#                         depth, a 20 s 720p clip
#   tracker_objects.json  SAM2.1/EdgeTAM batched vs one-by-one propagation at real sizes, 1/5/10/20 objects
#   summary.json          every step's command, exit code and seconds
# --steps runs only the named steps (a short lease: rerun what failed).
# The whole run is sized for about 9 minutes of wall time (--budget, default 500 s, split over the steps, plus the
# install); on an H200 it took 6.5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="benchmarks/results/gpu_check"
WHEELS=""
DRY_RUN=0
STEPS=""
BUDGET=500
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --steps) STEPS="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1 (use --out DIR, --wheels DIR, --budget SECONDS, --steps NAMES, --dry-run)" >&2; exit 2 ;;
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
  python3 -m venv --without-pip "$VENV" || exit 1
  PY="$VENV/bin/python"
  OWN_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  python3 -c 'import site, sys; print("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages()))' \
    > "$OWN_SITE/machine-site-packages.pth" || exit 1
  "$PY" -m pip --version > /dev/null 2>&1 || "$PY" -m ensurepip --upgrade > /dev/null || exit 1
  grep -v -E '^(torch|torchvision|torchaudio|triton|nvidia-)' .ci/constraints.txt > "$VENV/constraints.txt"
  if [ -n "$WHEELS" ]; then
    "$PY" -m pip install --no-index --no-deps --ignore-installed "$WHEELS"/*.whl && {
      "$PY" -m pip install --no-deps --no-build-isolation -e . || {
        # the machine's setuptools cannot build an editable install: link the three packages in instead
        echo "gpu_check.sh: editable install failed: linking the packages into the environment"
        ln -sfn "$PWD/stvgr1_edge" "$OWN_SITE/stvgr1_edge" && ln -sfn "$PWD/export" "$OWN_SITE/stvgr1_edge_export" &&
          ln -sfn "$PWD/train" "$OWN_SITE/stvgr1_edge_train"
      }
    }
  else
    "$PY" -m pip install -c "$VENV/constraints.txt" -e . || {
      # no index (a machine without internet): the package itself, on what the machine has; a step that needs a
      # missing package fails on its own and says so in its log
      echo "gpu_check.sh: installing the dependencies failed: going on without them"
      "$PY" -m pip install --no-deps --no-build-isolation -e .
    }
  fi > "$OUT/install.txt" 2>&1 || { echo "gpu_check.sh: install failed (see $OUT/install.txt)" >&2; tail -5 "$OUT/install.txt" >&2; exit 1; }
  "$PY" -m pip list >> "$OUT/install.txt" 2>&1
fi

# ------------------------------------------------------------------------------------------------ steps
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log its output, record how it ended
  local name="$1" limit="$2"
  shift 2
  if [ -n "$STEPS" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
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
  # 7B MLP shapes even here: 30-40 s on 2 CPU cores, well over that while anything else runs
  step int4_prefill_rows "$(share 20)" "$PY" benchmarks/int4_prefill_rows.py --device cpu --rows 1 64 --repeats 1 \
    --out "$OUT/int4_prefill_rows.json"
  step engine_decode "$(share 25)" "$PY" benchmarks/engine_decode.py --quick --no-compile --device cpu \
    --out "$OUT/engine_decode.json"
  step e2e_latency "$(share 40)" "$PY" benchmarks/e2e_latency.py --arch nano --seconds 2 --height 96 --width 128 \
    --device cpu --workdir "$OUT/e2e_work" --out "$OUT/e2e_latency.json"
  step tracker_objects "$(share 25)" "$PY" benchmarks/tracker_objects.py --sizes tiny --families sam2 \
    --objects 1 5 --frames 2 --warmup 1 --device cpu --out "$OUT/tracker_objects.json"
  rm -rf "$OUT/e2e_work"
else
  DEVICE=cuda
  # most telling first: a step cut off by its limit leaves the later ones their time
  step doctor 30 "$PY" -m stvgr1_edge doctor
  # only the modules holding gpu tests: the others import extras (trl, fastapi, ...) a CUDA image may not have
  step pytest_gpu "$(share 22)" "$PY" -m pytest -q -m gpu -p no:cacheprovider $(grep -l "mark.gpu" tests/test_*.py)
  step int4_prefill_rows "$(share 8)" "$PY" benchmarks/int4_prefill_rows.py --device cuda \
    --out "$OUT/int4_prefill_rows.json"
  step engine_decode "$(share 15)" "$PY" benchmarks/engine_decode.py --arch 7b --layers 4 --device cuda \
    --configs hf-fp32 hf-bf16 engine-bf16 engine-int4-g128-bf16 --repeats 2 --compile-processes 0 \
    --out "$OUT/engine_decode.json"
  # the quantized column (int4 weights and head at load, bf16, static engine, torch vision): ONNX Runtime's CUDA
  # provider and TensorRT are not on a bare CUDA image, and the bundle's ONNX vision would run on the CPU there
  step e2e_latency "$(share 40)" "$PY" benchmarks/e2e_latency.py --arch 7b --seconds 20 --device cuda \
    --columns full quantized --workdir "$OUT/e2e_work" --out "$OUT/e2e_latency.json"
  step tracker_objects "$(share 15)" "$PY" benchmarks/tracker_objects.py --sizes real --device cuda \
    --out "$OUT/tracker_objects.json"
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
