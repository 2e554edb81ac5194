#!/usr/bin/env bash
# Creates the virtual environment and installs llamafoundry into it (editable).
# llama-cpp-python is published as source only: the first install compiles llama.cpp (about 5 minutes
# on 2 cores) and shows a step counter; pip's wheel cache makes later installs take seconds.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
LLAMA_CPP_PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip wheel setuptools

if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "Installing $LLAMA_CPP_PIN (compiles llama.cpp from source the first time: ~5 minutes on 2 cores)..."
  # -v streams the compiler's [step/total] lines; show them as one updating counter line.
  "$VENV/bin/python" -m pip install -v "$LLAMA_CPP_PIN" 2>&1 | "$VENV/bin/python" -u scripts/build_progress.py
fi
echo "Installing llamafoundry and its dependencies..."
"$VENV/bin/python" -m pip install --progress-bar on -e .
