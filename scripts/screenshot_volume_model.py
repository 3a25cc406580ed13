"""Screenshots of the volume-model path in a real napari window.

Run from the repository root, with a display (Xvfb)::

    xvfb-run -a -s "-screen 0 1700x1050x24" .venv/bin/python \\
        scripts/screenshot_volume_model.py [docs/volume_finetune.png \\
        docs/volume_classify.png] [--n 40] [--epochs 15]

``--n`` semi-synthetic volumes of the Colin27 head (about 2 mm voxels, half
with one 4-15 mm lesion of contrast 0.3-0.6, the generator's defaults;
:mod:`napari_medcnn.io.lesions`) are opened, each labelled "lesion" or
"normal" as a whole volume in **Label images**, and each lesion gets its
mask through *Draw lesion mask* (the generator's mask is put into the
Labels layer where a user would paint it).  In **Fine-tune** the CNN+RNN
is picked and trained with live curves (48 slices; the masks switch it to
a fresh evidence encoder: slice stage, then the sequence head on the frozen
encoder) and handed to **Classify**, which classifies a held-out lesion
volume in volume scope: the first screenshot shows the painted mask, the
curves and the confusion matrix, the second the slice-probability and
slice-importance curves under the scan at the lesion, with a Grad-CAM
overlay from **Saliency**.  The data are synthetic: the model is not meant
for any clinical use.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from _gui import pump, wait

PLUGIN = "napari-medcnn"


def wait_idle(widget, limit: float = 5400.0) -> None:
    """Process events until ``widget``'s worker is done (at most ``limit`` s)."""
    wait(lambda: widget.worker is None, limit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shots", nargs="*", default=[
        "docs/volume_finetune.png", "docs/volume_classify.png"])  # fmt: skip
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import Qt

    from napari_medcnn.io import load
    from napari_medcnn.io.lesions import make_cohort

    tmp = Path(tempfile.mkdtemp(prefix="medcnn-volshot-"))
    make_cohort("colin27", tmp / "train", args.n, seed=1, shape=(90, 109, 91),
                write_masks=True)  # fmt: skip
    make_cohort("colin27", tmp / "test", 4, seed=2, shape=(90, 109, 91))
    table = json.loads((tmp / "train" / "lesions.json").read_text())["volumes"]

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1700, 1050)
    ldock, labels = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    ldock.parent().addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, ldock)
    layers = []
    for name, info in sorted(table.items()):
        layer = viewer.open(tmp / "train" / name, plugin=PLUGIN)[0]
        labels.set_layer(layer)
        labels.set_classes(["normal", "lesion"])
        labels.set_target("whole")
        labels.label(info["label"])
        layer.visible = False
        if info["label"] == "lesion":  # where a user paints with the brush
            mask_layer = labels.draw_mask()
            mask_layer.data = load(tmp / "train" / "masks" / name)[0].data > 0
            mask_layer.visible = False
            masked = (layer, mask_layer, info)
        layers.append(layer)
    labels.flush_masks()
    tdock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    train.refresh_labels()
    train.model_box.arch_combo.setCurrentIndex(
        train.model_box.arch_combo.findData("cnn_rnn")
    )
    train.model_box.slices_spin.setValue(48)
    train.set_parent("default")
    train.set_output(tmp / "lesion_cnn_rnn.safetensors")
    train.set_split("holdout")
    train.epochs_spin.setValue(args.epochs)
    train.batch_spin.setValue(1)
    layer, mask_layer, info = masked  # show the last lesion and its mask
    layer.visible = mask_layer.visible = True
    z0, z1 = info["slice_range"]
    viewer.dims.set_point(0, layer.data_to_world([(z0 + z1) // 2, 0, 0])[0])
    assert train.start(), train.status.text()
    wait_idle(train)
    if train.summary is None or train.summary.get("cancelled"):
        print(train.status.text(), file=sys.stderr)
        return 1
    pump(1.0)
    scroll = train.curves.parentWidget().parentWidget().parentWidget()
    scroll.ensureWidgetVisible(train.curves, 0, 0)
    pump(1.0)
    viewer.screenshot(args.shots[0], canvas_only=False, flash=False)
    print(args.shots[0], train.summary["accuracy"])

    # classify a held-out lesion volume with the new model
    test = json.loads((tmp / "test" / "lesions.json").read_text())["volumes"]
    name, info = next((k, v) for k, v in sorted(test.items())
                      if v["label"] == "lesion")  # fmt: skip
    for lay in list(viewer.layers):
        viewer.layers.remove(lay)
    viewer.window.remove_dock_widget(ldock)
    viewer.window.remove_dock_widget(tdock)
    layer = viewer.open(tmp / "test" / name, plugin=PLUGIN)[0]
    _d, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    wait_idle(classify)
    classify.load_model(str(train.checkpoint))
    wait_idle(classify)
    classify.set_channels([layer])
    assert classify.run()
    wait_idle(classify)
    rec = classify.record
    imp = np.asarray(rec.get("slice_importance") or [0])
    peak = int(np.argmax(imp))
    sdock, sal = viewer.window.add_plugin_dock_widget(PLUGIN, "Saliency")
    sdock.parent().addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, sdock)
    wait_idle(sal)
    sal.load_model(str(train.checkpoint))
    wait_idle(sal)
    sal.set_channels([layer])
    sal.set_method("gradcam")
    if sal.run():
        wait_idle(sal)
    viewer.dims.set_point(0, layer.data_to_world([peak, 0, 0])[0])
    classify.set_channels([layer])  # the scan, not the new overlay
    pump(0.5)
    cscroll = classify.curve.parentWidget().parentWidget().parentWidget()
    cscroll.ensureWidgetVisible(classify.curve, 0, 0)
    pump(1.5)
    viewer.screenshot(args.shots[1], canvas_only=False, flash=False)
    print(
        args.shots[1], rec["label"], rec["probabilities"],
        "lesion slices", info["slice_range"], "importance peak", peak,
    )  # fmt: skip
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
