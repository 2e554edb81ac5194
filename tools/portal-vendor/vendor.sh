#!/usr/bin/env bash
# Refreshes the portal's vendored browser libraries from npm (run by hand when upgrading them; commit the result).
# The versions are pinned in package.json and package-lock.json beside this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../src/llamafoundry/api/portal/static/vendor"
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
mkdir -p "$out"
cp node_modules/htmx.org/dist/htmx.min.js "$out/htmx.min.js"
cp node_modules/htmx.org/LICENSE "$out/htmx.LICENSE.txt"
cp node_modules/chart.js/dist/chart.umd.min.js "$out/chart.umd.min.js"
cp node_modules/chart.js/LICENSE.md "$out/chart.js.LICENSE.txt"
cp node_modules/@kurkle/color/LICENSE "$out/kurkle-color.LICENSE.txt"  # bundled into chart.umd.min.js
for package in htmx.org chart.js @kurkle/color; do
  node -e "const p=require('./node_modules/$package/package.json'); console.log(p.name + ' ' + p.version + ' (' + p.license + ')')"
done > "$out/VERSIONS.txt"
rm -rf node_modules
echo "Vendored into $out:"; cat "$out/VERSIONS.txt"
