"""Screenshot of the Cohort widget in a real napari window.

Run from the repository root, with a display (Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python \\
        scripts/screenshot_cohort_widget.py [docs/cohort_widget.png] [--keep DIR]

A small real cohort is written with :func:`napari_medcnn.io.synth.
write_cohort` (slabs of the shipped Colin27 T1 head: DICOM series in
folders named after synthetic patients, NIfTI volumes, PNG slices, one
corrupt PNG and one folder without images).  The **Cohort** widget runs
the shipped default model with Grad-CAM on two worker processes; the
table is sorted by the positive-class probability, the top row is
selected and opened (the scan at its most telling slice, with its
Grad-CAM overlay and classification), and the whole window is saved.
The data are synthetic heads without tumours: the labels show what the
model says, not a diagnosis.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _gui import pump, wait

PLUGIN = "napari-medcnn"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shot", nargs="?", default="docs/cohort_widget.png")
    ap.add_argument("--keep", type=Path, help="write the cohort and results here")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import Qt

    from napari_medcnn.io.synth import write_cohort
    from napari_medcnn.widgets.cohort.rows import COLUMN_KEYS

    base = args.keep or Path(tempfile.mkdtemp(prefix="medcnn-cohortshot-"))
    root, out = base / "study", base / "results"
    write_cohort(
        root, n_dicom=4, n_nifti=4, n_png=2, corrupt=("png",),
        non_image_folder=True, shape=(16, 128, 128), seed=3,
    )  # fmt: skip

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Cohort")
    # room for every column of the table (public QMainWindow API)
    dock.parent().resizeDocks([dock], [600], Qt.Orientation.Horizontal)
    wait(lambda: w.worker is None, 600.0)
    if w.model is None:
        print(w.status.text(), file=sys.stderr)
        return 1
    w.set_input(root)
    w.set_output(out)
    w.set_options(explain="gradcam", workers=args.workers)
    if not w.run():
        print(w.status.text(), file=sys.stderr)
        return 1
    wait(lambda: w.worker is None, 600.0)
    if w.outcome is None or w.outcome.cancelled:
        print(w.status.text(), file=sys.stderr)
        return 1
    print(w.status.text())

    # the highest positive-class probability first; open the top row
    w.table.sortByColumn(COLUMN_KEYS.index("positive"), Qt.SortOrder.DescendingOrder)
    w.table.selectRow(0)
    if not w.open_row(0):
        print(w.open_status.text(), file=sys.stderr)
        return 1
    pump(0.2)
    wait(lambda: w.open_worker is None, 600.0)
    print(w.open_status.text())
    if w.opened is None:
        return 1
    pump(1.5)
    shot = Path(args.shot)
    shot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    print(shot)
    viewer.close()
    return 0


if __name__ == "__main__":  # worker processes are spawned: guard the main
    sys.exit(main())
