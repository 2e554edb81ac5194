#!/usr/bin/env bash
# Installs what the test suite needs on top of `scripts/install.sh`: Python test extras, and the Node
# packages of the JS SDK test (skipped with a message when node/npm are missing), and the browser of the portal's
# tests.
set -euo pipefail
VENV=${VENV:-.venv}
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
