#!/usr/bin/env bash
# Install everything and run the whole test suite, GUI tests included, in real
# napari windows under Xvfb.  Extra arguments go to pytest (e.g. -m "not gui").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export QT_API=pyqt6 PYTHONHASHSEED=0 MPLBACKEND=Agg
.venv/bin/ruff check napari_medcnn tests benchmarks scripts
.venv/bin/ruff format --check napari_medcnn tests benchmarks scripts
exec xvfb-run -a -s "-screen 0 1600x1000x24" \
  .venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
