#!/usr/bin/env bash
# Render a demo report.html in headless Chromium and save a full-page PNG, to look at it as a reader would.
#   scripts/screenshot_report.sh vitdistill-demo/report.html [out.png] [height]
# Needs the Debian package `chromium` (apt-get install -y chromium).
set -euo pipefail
html=${1:?usage: $0 REPORT.html [OUT.png] [HEIGHT]}
out=${2:-${html%.html}.png}
height=${3:-6000}
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --screenshot="$(realpath -m "$out")" --window-size=1200,"$height" "file://$(realpath "$html")" 2>/dev/null
echo "$out"
