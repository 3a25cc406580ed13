"""Screenshot: a held-out lesion volume classified by a 3D ResNet trained
with lesion masks, and its 3D Grad-CAM, in a real napari window.

Run from the repository root, with a display (Xvfb), on a model trained as
in the README's volume table (``scripts/volume_models_experiment.py --masks
--archs resnet3d`` or ``napari-medcnn train --arch resnet3d`` on a CSV with
a ``mask`` column)::

    xvfb-run -a -s "-screen 0 1700x1050x24" .venv/bin/python \\
        scripts/screenshot_resnet3d_cam.py MODEL TEST_FOLDER \\
        [docs/volume_resnet3d_gradcam.png] [--index K]

``TEST_FOLDER`` is one written by :func:`napari_medcnn.io.lesions.
make_cohort` with masks (``lesions.json``, ``masks/``): its ``K``-th
lesion volume is opened, **Classify** reads it in volume scope and
**Saliency** draws Grad-CAM over it; the lesion's true outline is shown as
a Labels layer (contour only) and the view goes to the slice of the map's
peak.  The data are synthetic: the model is not meant for clinical use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _gui import pump, wait

PLUGIN = "napari-medcnn"


def wait_idle(widget, limit: float = 600.0) -> None:
    """Process events until ``widget``'s worker is done (at most ``limit`` s)."""
    wait(lambda: widget.worker is None, limit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("test")
    ap.add_argument("shot", nargs="?", default="docs/volume_resnet3d_gradcam.png")
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import Qt

    from napari_medcnn.io import load

    test = Path(args.test)
    table = json.loads((test / "lesions.json").read_text())["volumes"]
    lesions = [k for k, v in sorted(table.items()) if v["label"] == "lesion"]
    name = lesions[args.index]
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1700, 1050)
    layer = viewer.open(test / name, plugin=PLUGIN)[0]
    _d, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    wait_idle(classify)
    classify.load_model(args.model)
    wait_idle(classify)
    classify.set_channels([layer])
    assert classify.run()
    wait_idle(classify)
    rec = classify.record
    sdock, sal = viewer.window.add_plugin_dock_widget(PLUGIN, "Saliency")
    sdock.parent().addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, sdock)
    wait_idle(sal)
    sal.load_model(args.model)
    wait_idle(sal)
    sal.set_channels([layer])
    sal.set_method("gradcam")
    assert sal.run()
    wait_idle(sal)
    overlay = viewer.layers[-1]
    cam = np.asarray(overlay.data, float)
    peak = np.unravel_index(int(np.nanargmax(cam)), cam.shape)
    truth = load(test / "masks" / name)[0].data > 0
    outline = viewer.add_labels(
        truth.astype(np.uint8), name="true lesion (outline)",
        scale=layer.scale, translate=layer.translate, units=layer.units,
    )  # fmt: skip
    outline.contour = 1
    viewer.dims.set_point(0, layer.data_to_world([peak[0], 0, 0])[0])
    classify.set_channels([layer])
    pump(1.5)
    viewer.screenshot(args.shot, canvas_only=False, flash=False)
    print(
        args.shot, name, rec["label"], rec["probabilities"],
        "Grad-CAM peak", peak, "inside the lesion", bool(truth[peak]),
    )  # fmt: skip
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
