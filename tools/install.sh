#!/usr/bin/env bash
# Create .venv for mmdet_freebies on a CPU machine (see docs/get_started.md).
# Idempotent: every step checks before it installs, and a stamp keyed on the
# requirement files makes a repeated run return in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -q"
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MMCV_VERSION=2.1.0
STAMP="$VENV/.freebies-installed"
KEY=$(cat pyproject.toml requirements/*.txt tools/install.sh | sha1sum | cut -c1-12)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
    exit 0
fi

[[ -x "$PY" ]] || python3 -m venv "$VENV"

# torch: keep a suitable installed one, otherwise take the pinned CPU wheel
# (this project's machines serve it locally; elsewhere set TORCH_INDEX_URL,
# e.g. https://download.pytorch.org/whl/cpu, as PyPI's default is CUDA).
# An unpinned `torch` would pull several GB of CUDA packages.
if ! "$PY" -c 'import torch, sys; sys.exit(0 if tuple(map(int, torch.__version__.split("+")[0].split(".")[:2])) >= (2, 0) else 1)' 2>/dev/null; then
    echo "[install] torch==$TORCH_VERSION ${TORCH_INDEX_URL:+from $TORCH_INDEX_URL}"
    $PIP install "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
INSTALLED_TORCH=$("$PY" -c 'import torch; print(torch.__version__)')
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
cat requirements/constraints.txt > "$CONSTRAINTS"
echo "torch==$INSTALLED_TORCH" >> "$CONSTRAINTS"

# mmcv 2.1.0 has no wheel for this torch: build it from source once; pip's
# wheel cache serves every later install in seconds. Its setup.py needs
# pkg_resources, hence setuptools<70 and no build isolation.
if ! "$PY" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "'$MMCV_VERSION'"' 2>/dev/null; then
    echo "[install] mmcv==$MMCV_VERSION from source (about 10 minutes cold)"
    $PIP install "setuptools<70" wheel ninja packaging "numpy<2"
    MAX_JOBS=${MAX_JOBS:-2} $PIP install --no-build-isolation -c "$CONSTRAINTS" "mmcv==$MMCV_VERSION"
fi

echo "[install] requirements/runtime.txt (mmengine, mmdet, pycocotools, ...)"
# One resolve under the constraints, so openmim's dependencies cannot lift
# numpy to 2.x or replace torch.
$PIP install -c "$CONSTRAINTS" -r requirements/runtime.txt
$PIP install --no-deps -e .

"$PY" -c 'import mmdet_freebies, mmcv.ops; print("[install] ok:", mmdet_freebies.__version__)'
echo "$KEY" > "$STAMP"
