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
from pathlib import Path

from _gui import pacs_and_classify, pump, wait, write_head_series

USER, PASSWORD = "radiology", "screenshot-only-pw"
PATIENT_NAME, PATIENT_ID = "Example^Colin", "COLIN-0027"


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

    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import Server, connect
    from napari_medcnn.pacs.orthanc import LocalOrthanc

    folder = write_head_series(
        base / "series", PATIENT_NAME, PATIENT_ID, "pacs-screenshot"
    )
    orthanc = LocalOrthanc(user=USER, password=PASSWORD).start()
    try:
        server = Server("Orthanc (demo)", url=orthanc.dicomweb_url, user=USER,
                        password=PASSWORD, timeout=30.0)  # fmt: skip
        stored = connect(server).store([folder])
        print(f"stored {len(stored.stored)} instances in Orthanc")
        src = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)

        viewer = napari.Viewer(show=True)
        viewer.window.resize(1600, 1000)
        _pdock, w, cw = pacs_and_classify(viewer)
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
