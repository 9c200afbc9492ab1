#!/usr/bin/env bash
# Does the runtime still install on a Jetson? Resolves pyproject.toml's runtime dependencies (less torch and
# torchvision, which come from NVIDIA, and accelerate, which needs torch: its wheel is checked on its own) for
# JetPack 6 — Python 3.10, aarch64, glibc 2.35 — from PyPI's wheels with deploy/constraints-jetson-py310.txt,
# installing nothing. Fails when a dependency has no wheel there, conflicts with a Jetson pin, would pull torch from
# PyPI, or brings in a package the pins do not cover.
#
#   bash deploy/check_jetson_resolve.sh                   run the check (needs PyPI, Python 3.11+ for tomllib, and a
#                                                         pip recent enough for --dry-run with --platform: CI's)
#   bash deploy/check_jetson_resolve.sh --print-command   print the pip command and exit
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
CONSTRAINTS=deploy/constraints-jetson-py310.txt
# Runtime dependencies that require torch: a dry run cannot take torch from NVIDIA, so their pinned wheels (and
# psutil, which accelerate adds) are checked on their own below, without dependencies.
TORCH_DEPENDENT=(accelerate psutil)

case "${1:-}" in
  "" | --print-command) ;;
  *)
    echo "usage: bash deploy/check_jetson_resolve.sh [--print-command]" >&2
    exit 2
    ;;
esac

# The runtime's dependencies, read now so that a bump in pyproject.toml is what gets checked.
mapfile -t DEPENDENCIES < <("$PYTHON" - <<'EOF'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
for requirement in dependencies:
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    if re.sub(r"[-_.]+", "-", name).lower() not in ("torch", "torchvision", "accelerate"):
        print(requirement)
EOF
)
if [ "${#DEPENDENCIES[@]}" -eq 0 ]; then
  echo "check_jetson_resolve: no dependencies read from pyproject.toml" >&2
  exit 1
fi

# pip takes a --platform tag literally (manylinux_2_35 does not imply manylinux_2_28), so every manylinux tag a
# glibc 2.35 system accepts is listed.
PLATFORMS=(--platform linux_aarch64 --platform manylinux2014_aarch64)
for minor in $(seq 17 35); do
  PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64")
done
TARGET=("${PLATFORMS[@]}" --python-version 3.10 --implementation cp --only-binary=:all:)
COMMAND=("$PYTHON" -m pip install --dry-run --ignore-installed "${TARGET[@]}" -c "$CONSTRAINTS" "${DEPENDENCIES[@]}")

if [ "${1:-}" = "--print-command" ]; then
  printf '%q ' "${COMMAND[@]}"
  echo
  exit 0
fi

# A machine-wide pip constraint (pip.conf's `constraint`, e.g. a cap on this machine's torch) must not change what a
# Jetson resolves: only the Jetson pins apply. The rest of pip's configuration (index, certificates) still does.
export PIP_CONSTRAINT=/dev/null

REPORT="$(mktemp)"
trap 'rm -f "$REPORT"' EXIT
# -qq: quiet enough for the JSON report on stdout, and silent about pip.conf's index folders that do not exist
if ! "${COMMAND[@]}" -qq --report - >"$REPORT"; then
  # again, verbose, for pip's explanation of the conflict
  "${COMMAND[@]}" --report /dev/null 2>&1 | grep -v "is ignored: it is neither a file nor a directory" | tail -n 30 >&2
  echo "Jetson resolve FAILED: the runtime's dependencies do not resolve for Python 3.10 aarch64 with $CONSTRAINTS" >&2
  exit 1
fi

"$PYTHON" - "$REPORT" "$CONSTRAINTS" <<'EOF'
import json
import re
import sys

report_path, constraints_path = sys.argv[1:]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


pins = {}
with open(constraints_path, encoding="utf-8") as f:
    for line in f:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version.strip()

with open(report_path, encoding="utf-8") as f:
    resolved = {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(f)["install"]}

problems = []
for name in sorted(resolved):
    if name in ("torch", "torchvision") or name.startswith("nvidia-"):
        problems.append(f"{name} {resolved[name]} would come from PyPI and replace NVIDIA's Jetson build")
    elif pins.get(name) != resolved[name]:
        problems.append(f"{name} {resolved[name]} is not pinned: add {name}=={resolved[name]} to {constraints_path}")
if problems:
    print("Jetson resolve FAILED:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"Jetson resolve OK: {len(resolved)} packages for Python 3.10 aarch64, every one pinned by {constraints_path}")
EOF

# The packages that need torch: their pinned wheels must exist for Python 3.10 aarch64.
if ! "$PYTHON" -m pip install --dry-run --ignore-installed -qq --no-deps "${TARGET[@]}" -c "$CONSTRAINTS" \
  "${TORCH_DEPENDENT[@]}"; then
  echo "Jetson resolve FAILED: no Python 3.10 aarch64 wheel for the pinned ${TORCH_DEPENDENT[*]}" >&2
  exit 1
fi
echo "Jetson torch-dependent packages OK: ${TORCH_DEPENDENT[*]} (pinned) have Python 3.10 aarch64 wheels"
