#!/usr/bin/env bash
# Install everything and open the napari-medcnn demo (see README).
# Without a display it runs under Xvfb and writes demo.png instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/napari-medcnn demo "$@"
fi
echo "[demo] no display: running under Xvfb, screenshot -> demo.png (replaced)"
exec xvfb-run -a -s "-screen 0 1600x1000x24" \
  .venv/bin/napari-medcnn demo --screenshot demo.png --overwrite --quit "$@"
