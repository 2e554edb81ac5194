#!/usr/bin/env bash
# Creates the virtual environment and installs llamafoundry into it (editable).
# llama.cpp (llama-cpp-python) is compiled for the instruction sets this CPU really executes: a probe runs each
# one first, the build is checked with a decode of the demo model, and a build that crashes is replaced by one
# without the failing sets (src/llamafoundry/hardware/llama_build.py). The first install compiles for about
# 5 minutes on 2 cores and shows a step counter; the wheel is kept in ~/.cache/llamafoundry/llama-wheels, keyed by
# the build flags, so later installs on the same kind of machine take seconds.
# LLAMAFOUNDRY_GPU=cuda|vulkan builds llama.cpp with that GPU backend (default: cpu).
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
LLAMA_CPP_PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip wheel setuptools

echo "Checking the llama.cpp build for this CPU ($LLAMA_CPP_PIN)..."
"$VENV/bin/python" src/llamafoundry/hardware/llama_install.py ensure --python "$VENV/bin/python" --pin "$LLAMA_CPP_PIN"
echo "Installing llamafoundry and its dependencies..."
"$VENV/bin/python" -m pip install --progress-bar on -e .
