"""Screenshot of the PACS widget in a real napari window, against a real
PACS (Debian's Orthanc with the DICOMweb plugin).

Run from the repository root, with a display (Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python \\
        scripts/screenshot_pacs_widget.py [docs/pacs_widget.png]

A :class:`~napari_medcnn.pacs.orthanc.LocalOrthanc` is started (temporary
storage, free ports on 127.0.0.1, HTTP basic authentication).  A slab of
the shipped Colin27 T1 head (read with :func:`napari_medcnn.io.load`) is
written as a DICOM MR series of a synthetic patient
(:func:`napari_medcnn.io.synth.write_series`) and stored in Orthanc.  The
**PACS** widget then tests the server, searches it (patient names masked),
retrieves the series; the **Classify** widget classifies it with the
default model (every slice); "Send results" stores the classification's
SR in Orthanc, and the window is saved.  Finally a QIDO-RS search by
modality SR checks that the SR is in Orthanc, in the series' study, and
that it references the series.  The head has no tumour: the label shows
what the model says, not a diagnosis.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = "napari-medcnn"
USER, PASSWORD = "radiology", "screenshot-only-pw"
PATIENT_NAME, PATIENT_ID = "Example^Colin", "COLIN-0027"


def pump(seconds: float) -> None:
    """Let Qt process events for ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait(test, limit: float = 300.0) -> None:
    """Process events until ``test()`` is true (at most ``limit`` s)."""
    end = time.perf_counter() + limit
    while not test() and time.perf_counter() < end:
        pump(0.1)


def write_head_series(out: Path) -> Path:
    """A 3 mm axial slab (24 slices) of the Colin27 T1 head as a DICOM MR
    series of a synthetic patient; returns its folder."""
    from napari_medcnn.io import load
    from napari_medcnn.io.synth import write_series

    (head,) = load(Path("napari_medcnn/data/colin27_t1.nii.gz"))
    dz, dy, dx = (float(s) for s in head.spacing)
    step = 3
    z0 = head.data.shape[0] // 2 - 10
    slab = head.data[z0 : z0 + 24 * step : step].astype("float64")
    write_series(
        slab, out, spacing=(dz * step, dy, dx), origin=(-90.0, -126.0, -20.0),
        modality="MR", patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
        series_description="T1 axial 3 mm", seed="pacs-screenshot",
    )  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shot", nargs="?", default="docs/pacs_widget.png")
    args = ap.parse_args()
    import os

    base = Path(tempfile.mkdtemp(prefix="medcnn-pacsshot-"))
    # a private cache and config: nothing of the demo stays in the user's
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")

    import napari
    import pydicom
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import Server, connect
    from napari_medcnn.pacs.orthanc import LocalOrthanc

    folder = write_head_series(base / "series")
    orthanc = LocalOrthanc(user=USER, password=PASSWORD).start()
    try:
        server = Server("Orthanc (demo)", url=orthanc.dicomweb_url, user=USER,
                        password=PASSWORD, timeout=30.0)  # fmt: skip
        stored = connect(server).store([folder])
        print(f"stored {len(stored.stored)} instances in Orthanc")
        src = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)

        viewer = napari.Viewer(show=True)
        viewer.window.resize(1600, 1000)
        pdock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "PACS")
        cdock, cw = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
        # Classify under napari's layer list (left), PACS on the right; the
        # public QMainWindow API of the dock's parent, no private napari API
        main_window = pdock.parent()
        main_window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, cdock)
        pump(0.2)
        for d in main_window.findChildren(QDockWidget):
            if d.windowTitle() == "layer controls":
                d.hide()  # room for the classification under the layer list
        pump(0.2)
        left = [d for d in main_window.findChildren(QDockWidget)
                if d.isVisible() and main_window.dockWidgetArea(d)
                == Qt.DockWidgetArea.LeftDockWidgetArea]  # fmt: skip
        main_window.resizeDocks([pdock], [560], Qt.Orientation.Horizontal)
        main_window.resizeDocks(left, [440] * len(left), Qt.Orientation.Horizontal)
        # the Classify result (bars, per-slice curve) gets the height
        heights = [100] * (len(left) - 1) + [860]
        main_window.resizeDocks(left, heights, Qt.Orientation.Vertical)
        wait(lambda: cw.worker is None)  # the default model loads
        if cw.model is None:
            print(cw.status.text(), file=sys.stderr)
            return 1

        # the server as a user types it (password masked)
        w.kind_combo.setCurrentText("DICOMweb")
        w.address_edit.setText(orthanc.dicomweb_url)
        w.user_edit.setText(USER)
        w.password_edit.setText(PASSWORD)
        w.name_edit.setText("Orthanc (demo)")
        w.test()
        wait(lambda: w.worker is None)
        print(w.test_status.text())
        w.set_filters(modality="MR", description="")
        w.search()
        wait(lambda: w.worker is None)
        print(w.status.text())
        if not w.rows:
            return 1
        w.select_rows([0])
        w.retrieve()
        wait(lambda: w.worker is None)
        print(w.status.text())
        layer = viewer.layers[-1]
        viewer.layers.selection.active = layer

        cw.set_channels([layer])
        cw.set_scope("slices")
        if not cw.run():
            print(cw.status.text(), file=sys.stderr)
            return 1
        wait(lambda: cw.worker is None)
        print(cw.status.text())
        viewer.dims.set_point(0, float(layer.translate[0] + layer.scale[0] * 12))

        w.select_rows([0])
        if not w.send_results(layer):
            print(w.status.text(), file=sys.stderr)
            return 1
        wait(lambda: w.worker is None)
        print(w.status.text())
        pump(1.5)
        shot = Path(args.shot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(shot), canvas_only=False, flash=False)
        print(shot)
        viewer.close()

        # QIDO-RS: the SR is in Orthanc, in the study, referencing the series
        client = connect(server)
        srs = client.find_series(str(src.StudyInstanceUID), modality="SR")
        if len(srs) != 1:
            print(f"QIDO found {len(srs)} SR series", file=sys.stderr)
            return 1
        got = drain(client.retrieve_series(str(src.StudyInstanceUID),
                                           srs[0].series_uid, base / "sr"))  # fmt: skip
        sr = pydicom.dcmread(next(got.glob("*.dcm")))
        ref = sr.CurrentRequestedProcedureEvidenceSequence[0]
        ref_series = ref.ReferencedSeriesSequence[0].SeriesInstanceUID
        ok = ref_series == src.SeriesInstanceUID
        print(f"QIDO (Modality=SR): 1 SR series in the study, {srs[0].n_instances} "
              f"instance, description {srs[0].description!r}; it references the "
              f"retrieved series: {ok}")  # fmt: skip
        return 0 if ok else 1
    finally:
        orthanc.stop()
        shutil.rmtree(base, ignore_errors=True)  # the demo series, the cache


if __name__ == "__main__":
    sys.exit(main())
