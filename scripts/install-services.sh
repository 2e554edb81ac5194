#!/usr/bin/env bash
# Installs the servers the test suite starts for itself (each test starts its own instance on a free
# loopback port; nothing here runs a service): redis-server for the shared rate limiter, PostgreSQL for the
# store. Skipped when they are already installed, so repeated `make test` runs do not touch apt.
set -euo pipefail
PACKAGES=(redis-server postgresql)
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "Test services already installed: ${PACKAGES[*]}."
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${missing[*]} yourself; the tests that need them will be skipped."
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing test services: ${missing[*]} (apt)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
