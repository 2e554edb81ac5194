#!/usr/bin/env bash
# Installs the browser the portal's tests drive: Debian's chromium (/usr/bin/chromium), through Playwright
# (the `playwright` Python package, a test extra). Playwright's own browser download is never used: it needs
# hosts beyond the package registries. Skipped when chromium is already installed.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "Browser for the portal tests already installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)."
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install chromium yourself (/usr/bin/chromium); the portal's browser tests will be skipped."
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing chromium for the portal's browser tests (apt)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
