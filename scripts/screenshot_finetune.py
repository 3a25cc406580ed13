"""Screenshot of the "Label images" and "Fine-tune" docks on a real MR volume.

Run from the repository root, with a display (Xvfb)::

    xvfb-run -a .venv/bin/python scripts/screenshot_finetune.py [docs/finetune.png]

The Colin27 T1 head (sample data ``mr_volume``, copied to a temporary
folder so that its label sidecar is not written into the package) is
labelled by slice ranges ("no brain" above and below the head, "brain"
through it), and the default model is fine-tuned on those slices for a few
epochs in the Fine-tune widget; the window is captured with the live
learning curves, the confusion matrix and the recommendation.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from _gui import pump


def main(out: str = "docs/finetune.png") -> int:
    import napari
    from qtpy.QtCore import Qt

    from napari_medcnn._sample_data import MR_VOLUME

    tmp = Path(tempfile.mkdtemp(prefix="medcnn-shot-"))
    scan = shutil.copy(MR_VOLUME, tmp / MR_VOLUME.name)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1700, 1050)
    layer = viewer.open(scan, plugin="napari-medcnn")[0]
    plugin = "napari-medcnn"
    ldock, labels = viewer.window.add_plugin_dock_widget(plugin, "Label images")
    ldock.parent().addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, ldock)
    labels.set_layer(layer)
    labels.set_classes(["no brain", "brain"])
    n = layer.data.shape[0]
    labels.set_target("range")
    for a, b, cls in ((0, 14, "no brain"), (n - 22, n - 1, "no brain"),
                      (45, 125, "brain")):  # fmt: skip
        labels.set_range(a, b)
        labels.label(cls)
    labels.set_target("slice")
    _d, train = viewer.window.add_plugin_dock_widget(plugin, "Fine-tune")
    train.set_parent("default")
    train.set_output(tmp / "brain_slices.safetensors")
    train.set_split("holdout")
    train.epochs_spin.setValue(5)
    viewer.dims.set_point(0, layer.data_to_world([90, 0, 0])[0])
    assert train.start(), train.status.text()
    while train.worker is not None:
        pump(0.1)
    if train.summary is None or train.summary.get("cancelled"):
        print(train.status.text(), file=sys.stderr)
        return 1
    labels.go_to(90)
    pump(1.0)
    body = train.curves.parentWidget()
    scroll = body.parentWidget().parentWidget()  # QScrollArea (viewport parent)
    scroll.ensureWidgetVisible(train.curves, 0, 0)
    pump(1.0)
    viewer.screenshot(out, canvas_only=False, flash=False)
    print(out, train.summary["accuracy"], train.summary["advice"]["verdict"])
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
