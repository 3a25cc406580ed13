"""Lesion masks in Label images: paint where the finding is in a volume.

A mixin for :class:`~napari_medcnn.widgets.labelling.widget.LabellingWidget`.
*Draw lesion mask* opens the scan's mask as a Labels layer on its grid
(restored from the mask file beside the label sidecar, else empty), selects
it and switches napari to painting label 1.  Every stroke is saved to the
mask file (atomically, shortly after the stroke; at once when the panel
closes), so a painted mask survives napari closing.  Fine-tune hands the
mask to a CNN+RNN or slice-pool model with the volume's label
(:mod:`napari_medcnn.training.slice_stage`).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer

from napari_medcnn.widgets._common.masks import open_mask_layer, save_mask_layer

#: a painted mask is saved this long after the last stroke (ms)
MASK_SAVE_DELAY_MS = 800


class MaskMixin:
    """Needs ``_viewer``, ``layer``, ``store``, ``_say`` and ``_error``."""

    def _init_masks(self) -> None:
        self._mask_savers: dict[int, tuple[Any, Any, QTimer]] = {}

    def draw_mask(self) -> Any:
        """Open (or create) the lesion mask of the scan and start painting;
        returns the Labels layer, or None (message shown)."""
        image, store = self.layer, self.store
        if image is None or image.ndim != 3 or getattr(image, "rgb", False):
            self._error("Lesion masks are drawn on 3D volumes: choose a volume.")
            return None
        try:
            lay = open_mask_layer(self._viewer, image, store)
        except ValueError as exc:  # a damaged mask file, named in the message
            self._error(f"Lesion mask of '{image.name}' not loaded: {exc}")
            return None
        if id(lay) not in self._mask_savers:
            timer = QTimer(self)
            timer.setSingleShot(True)
            timer.setInterval(MASK_SAVE_DELAY_MS)
            timer.timeout.connect(lambda: self._save_mask(lay, store))
            lay.events.paint.connect(lambda _e=None: timer.start())
            lay.events.set_data.connect(lambda _e=None: timer.start())
            self._mask_savers[id(lay)] = (lay, store, timer)
        self._viewer.layers.selection.active = lay
        lay.selected_label = 1
        lay.mode = "paint"
        where = (
            "saved beside the labels"
            if getattr(store, "path", None) is not None
            else "kept in this session (the scan's folder is not writable)"
        )
        self._say(
            f"Paint the finding on '{lay.name}' (label 1; erase with 0); it is "
            f"{where}. Fine-tune's CNN+RNN learns where findings are from it."
        )
        return lay

    def flush_masks(self) -> None:
        """Save every mask with a pending save now (the panel closes)."""
        for lay, store, timer in list(self._mask_savers.values()):
            if timer.isActive():
                timer.stop()
                self._save_mask(lay, store)

    def _save_mask(self, lay: Any, store: Any) -> None:
        try:
            save_mask_layer(lay, store)
        except OSError as exc:
            self._error(f"Lesion mask '{lay.name}' not saved: {exc}")
