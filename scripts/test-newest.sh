#!/usr/bin/env bash
# Run the test suite in a brand-new virtual environment on the newest versions of every dependency
# that a fresh `pip install` resolves today (what a new user gets). Prints the versions it tested.
#
#   scripts/test-newest.sh [PYTHON] [-- PYTEST ARGS...]
#
# Downloads about 5.6 GB (torch with its CUDA libraries, timm, torchvision, numpy, ...); about two
# minutes on a fast connection. The venv is made in a temporary folder and removed afterwards
# (set KEEP_VENV=1 to keep it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3}"
[ "$#" -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
venv="$(mktemp -d "${TMPDIR:-/tmp}/vitdistill-newest.XXXXXX")"
cleanup() { [ "${KEEP_VENV:-0}" = 1 ] && echo "kept $venv" || rm -rf "$venv"; }
trap cleanup EXIT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# a copy of the tree, so that the build does not write into the checkout
src="$venv/src"
mkdir -p "$src"
(cd "$root" && tar --exclude=.git --exclude=.venv --exclude=runs -cf - .) | (cd "$src" && tar -xf -)
"$venv/bin/python" -m pip install --upgrade --upgrade-strategy eager "$src[test]"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "timm", "torchvision", "numpy", "safetensors", "pyyaml", "matplotlib", "tqdm", "pillow", "scipy", "pytest"):
    print(f"{name}=={md.version(name)}")
PY
cd "$src"
"$venv/bin/python" -m pytest -q "$@"
