"""Label images dock widget: image, slice, volume and region labels.

A stateful panel (a small ``QWidget``) over the core label logic
(:mod:`napari_medcnn.training.labels.store`).  The user defines class names (or
takes the current model's), then labels the scan napari shows: the current
slice, a slice range, or the whole 2D image / 3D volume, with the class
buttons or the keys 1–9 (0 removes the label).  Labelled items are listed
with counts per class; clicking one moves napari to it.  Every change is
saved at once to the JSON sidecar beside the scan (no patient data) and
reloaded when the same scan is opened again.

Region labels: in a napari Labels layer, value 1 is the first class, 2 the
second…; "Train & map" trains a patch classifier on patches around the
painted pixels in a worker (:mod:`.regions`) and shows the
class-probability map as Image layers aligned with the scan.  "Next case"
ranks the unlabelled slices/images of the open layers by model uncertainty
and goes to the most informative one.  torch is imported only in workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.widgets._common.controls import RunControls
from napari_medcnn.widgets._common.jobs import JobHandle
from napari_medcnn.widgets._common.labels import LABELS_KEY, n_slices_of, open_store
from napari_medcnn.widgets._common.layers import (
    current_slice_index,
    is_result,
    slice_axis,
    slice_world_position,
)
from napari_medcnn.widgets.labelling.boxes import (
    ClassBox,
    RegionBox,
    TargetBox,
    hbox,
)
from napari_medcnn.widgets.labelling.masks import MaskMixin
from napari_medcnn.widgets.labelling.regions import RegionMixin
from napari_medcnn.widgets.labelling.shortcuts import KeyBinder

if TYPE_CHECKING:
    import napari

_ITEM_ROLE = Qt.ItemDataRole.UserRole


class LabellingWidget(RegionMixin, MaskMixin, QWidget):
    """Dock widget to label images, slices, volumes and regions.

    Args:
        viewer: the napari viewer.
        bind_keys: bind 1–9 (label) and 0 (remove) on the viewer while the
            panel is open.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        bind_keys: bool = True,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_labelling")
        self._viewer = viewer
        self._job = JobHandle()
        self._stores: dict[str, Any] = {}  # layer.unique_id -> LabelStore
        self._model: Any = None  # explicit model for "Next case"
        self._init_regions()
        self._init_masks()

        # -- child widgets: scan, classes, target, labelled items, regions, job
        self.scan_combo = QComboBox()
        self.scan_combo.setToolTip("The image layer (scan) being labelled.")
        self.class_box = cb = ClassBox()
        self.classes_edit, self.classes_button = cb.classes_edit, cb.classes_button
        self.from_model_button = cb.from_model_button
        self.target_box = tb = TargetBox()
        self.target_combo, self.unlabel_button = tb.target_combo, tb.unlabel_button
        self.range_from, self.range_to = tb.range_from, tb.range_to
        self.mask_button = tb.mask_button
        self.from_here_button, self.to_here_button = (
            tb.from_here_button, tb.to_here_button,
        )  # fmt: skip
        self.counts_label = QLabel("No labels yet.")
        self.counts_label.setWordWrap(True)
        self.items_list = QListWidget()
        self.items_list.setToolTip("Labelled items; click one to go to it.")
        self.items_list.setMinimumHeight(90)
        self.next_button = QPushButton("Next case")
        self.next_button.setToolTip(
            "Go to the most informative unlabelled slice or image of the open "
            "layers (highest model uncertainty: entropy, or MC-dropout mutual "
            "information for models with dropout)."
        )
        self.region_box = rb = RegionBox()
        self.labels_combo, self.patch_spin = rb.labels_combo, rb.patch_spin
        self.patch_dims_combo = rb.patch_dims_combo
        self.region_epochs = rb.region_epochs
        self.region_button = rb.region_button
        self.to_labels_button = rb.to_labels_button
        self.seg_button = rb.seg_button
        self.run_controls = rc = RunControls(actions=())
        rc.progress.setRange(0, 1)
        self.progress, self.cancel_button, self.status = (
            rc.progress, rc.cancel_button, rc.status,
        )  # fmt: skip
        layout = QVBoxLayout(self)
        layout.addLayout(hbox(QLabel("Scan:"), self.scan_combo))
        for w in (self.class_box, self.target_box, self.counts_label,
                  self.items_list, self.next_button, self.region_box,
                  self.run_controls):  # fmt: skip
            layout.addWidget(w)
        layout.addStretch(1)

        self._keys = KeyBinder(viewer, self.label_with_key, self.unlabel)
        self._bind_keys = bind_keys
        self.destroyed.connect(self._keys.unbind)
        self.destroyed.connect(self._stop_jobs)
        if bind_keys:
            self._keys.bind()

        self.scan_combo.currentIndexChanged.connect(self._on_scan_changed)
        self.classes_button.clicked.connect(self._apply_class_text)
        self.classes_edit.returnPressed.connect(self._apply_class_text)
        self.class_box.label_clicked.connect(self.label)
        self.from_model_button.clicked.connect(self.classes_from_model)
        self.target_combo.currentIndexChanged.connect(self._update_buttons)
        self.from_here_button.clicked.connect(
            lambda: self.range_from.setValue(self.current_slice())
        )
        self.to_here_button.clicked.connect(
            lambda: self.range_to.setValue(self.current_slice())
        )
        self.unlabel_button.clicked.connect(self.unlabel)
        self.mask_button.clicked.connect(self.draw_mask)
        self.items_list.itemClicked.connect(self._on_item_clicked)
        self.next_button.clicked.connect(self.next_case)
        self.region_button.clicked.connect(self.train_regions)
        self.to_labels_button.clicked.connect(self.map_to_labels)
        self.seg_button.clicked.connect(self._export_seg_dialog)
        self.cancel_button.clicked.connect(self.cancel)
        for emitter in (
            viewer.layers.events.inserted,
            viewer.layers.events.removed,
            viewer.layers.events.renamed,
        ):
            emitter.connect(self._on_layers_changed)
        viewer.layers.selection.events.active.connect(self._on_active_changed)
        self._on_layers_changed()
        self._on_active_changed()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(380, 720)

    def event(self, event: QEvent) -> bool:
        """napari closes a dock by un-parenting its widget: then the keys
        are unbound and a running job is cancelled (docked again: rebound)."""
        if event.type() == QEvent.Type.ParentChange and hasattr(self, "_keys"):
            if self.parent() is None:
                self._keys.unbind()
                self._stop_jobs()
            elif self._bind_keys:
                self._keys.bind()
                self._on_layers_changed()
        return super().event(event)

    # -- public API ------------------------------------------------------
    @property
    def class_buttons(self) -> list[QPushButton]:
        """The class buttons (``k. name``), rebuilt when the classes change."""
        return self.class_box.buttons

    @property
    def worker(self):
        """The running region / "Next case" worker, or None."""
        return self._job.worker

    @property
    def layer(self) -> Any:
        """The image layer being labelled, or None."""
        return self.scan_combo.currentData()

    @property
    def store(self) -> Any:
        """The :class:`LabelStore` of :attr:`layer` (opened on first use:
        its sidecar is reloaded), or None without a layer."""
        layer = self.layer
        if layer is None:
            return None
        store = self._stores.get(layer.unique_id)
        if store is None:
            try:
                store = open_store(layer, self._default_classes())
            except ValueError as exc:  # LabelsError, SidecarCorrupt
                self._error(f"Labels of '{layer.name}' not loaded: {exc}")
                return None
            self._stores[layer.unique_id] = store
            for msg in store.warnings:
                self._say(msg, warn=True)
            self._mirror(layer, store)
        return store

    @property
    def classes(self) -> list[str]:
        """The class names (key k = ``classes[k - 1]``)."""
        store = self.store
        return list(store.classes) if store is not None else []

    def set_layer(self, layer: Any) -> None:
        """Label ``layer`` (an image layer of the viewer)."""
        for i in range(self.scan_combo.count()):
            if self.scan_combo.itemData(i) == layer:
                self.scan_combo.setCurrentIndex(i)
                return
        raise ValueError(f"'{layer.name}' is not an image layer of this viewer")

    def set_classes(self, names: list[str]) -> None:
        """Use class ``names`` (classes still used by labels must stay)."""
        store = self.store
        if store is None:
            self._error("Open or select an image layer first.")
            return
        try:
            store.set_classes([n for n in (s.strip() for s in names) if n])
        except ValueError as exc:
            self._error(str(exc))
        self._refresh()

    def classes_from_model(self) -> None:
        """Add the current model's classes (Classify widget, else default)."""
        try:
            names = self._model_classes()
        except Exception as exc:  # noqa: BLE001 (missing / unreadable model)
            self._error(f"No model to take classes from: {exc}")
            return
        self.set_classes(self.classes + [c for c in names if c not in self.classes])

    def set_target(self, target: str) -> None:
        """``slice`` (current slice), ``range`` or ``whole``."""
        self.target_combo.setCurrentIndex(self.target_combo.findData(target))

    def set_range(self, start: int, stop: int) -> None:
        """The slice range (inclusive) that ``range`` labels."""
        self.range_from.setValue(int(start))
        self.range_to.setValue(int(stop))

    def current_slice(self) -> int:
        """The slice of :attr:`layer` napari shows (0 for 2D)."""
        layer = self.layer
        if layer is None or layer.ndim < 3:
            return 0
        return current_slice_index(layer, self._viewer.dims.point)

    def label(self, cls: str | int) -> bool:
        """Label the chosen target as ``cls`` (name, or key 1–9)."""
        store = self.store
        if store is None:
            self._error("Open or select an image layer first.")
            return False
        target = self.target_combo.currentData()
        try:
            if store.n_slices is None:
                store.label_image(cls)
                what = "image"
            elif target == "whole":
                store.label_volume(cls)
                what = "volume"
            elif target == "range":
                a, b = self.range_from.value(), self.range_to.value()
                store.label_slices(a, b, cls)
                what = f"slices {min(a, b)}–{max(a, b)}"
            else:
                i = self.current_slice()
                store.label_slice(i, cls)
                what = f"slice {i}"
        except (ValueError, OSError) as exc:
            self._error(f"Not labelled: {exc}")
            return False
        name = cls if isinstance(cls, str) else store.class_for_key(cls)
        self._refresh()
        self._say(f"{self.layer.name}: {what} → {name}")
        return True

    def label_with_key(self, key: int) -> None:
        """What key ``key`` (1–9) does: label with the key's class."""
        store = self.store
        if store is not None and key > len(store.classes):
            self._say(f"Key {key} has no class: define more classes.", warn=True)
            return
        self.label(key)

    def unlabel(self) -> None:
        """Remove the label of the chosen target."""
        store = self.store
        if store is None:
            return
        target = self.target_combo.currentData()
        if store.n_slices is None or target == "whole":
            store.clear_image()
        elif target == "range":
            store.unlabel_slices(self.range_from.value(), self.range_to.value())
        else:
            store.unlabel_slices(self.current_slice())
        self._refresh()

    def go_to(self, index: int | None, layer: Any = None) -> None:
        """Move napari to slice ``index`` of ``layer`` (default: the
        labelled one) and select that layer; None only selects it."""
        layer = layer if layer is not None else self.layer
        if layer is None:
            return
        if layer != self.layer:
            self.set_layer(layer)
        self._viewer.layers.selection.active = layer
        if index is not None and layer.ndim >= 3:
            axis = slice_axis(self._viewer.dims.ndim, layer)
            self._viewer.dims.set_point(axis, slice_world_position(layer, index))

    def cancel(self) -> None:
        """Stop the running job (a training run stops after its batch)."""
        self._cancel_regions()
        if self._job.worker is not None:
            self._say("Cancelling…")

    # -- internals -------------------------------------------------------
    def _stop_jobs(self, *_args) -> None:
        self.flush_masks()
        self._cancel_regions()
        self._job.quit()

    def _default_classes(self) -> list[str]:
        text = [c.strip() for c in self.classes_edit.text().split(",")]
        return [c for c in text if c]

    def _apply_class_text(self) -> None:
        self.set_classes(self._default_classes())

    def _mirror(self, layer: Any, store: Any) -> None:
        """Copy the labels (JSON, no PHI) into the layer's metadata, for
        the Fine-tune widget; the sidecar stays the source of truth."""
        layer.metadata = {**(layer.metadata or {}), LABELS_KEY: store.to_dict()}

    def _refresh(self) -> None:
        layer, store = self.layer, self.store
        self.items_list.clear()
        if layer is None or store is None:
            self.class_box.show_classes([])
            self.counts_label.setText("Open an image layer to label it.")
            self._update_buttons()
            return
        self._mirror(layer, store)
        if self.classes_edit.text() != ", ".join(store.classes):
            self.classes_edit.setText(", ".join(store.classes))
        if [b.text() for b in self.class_buttons] != self._button_texts(store):
            self.class_box.show_classes(store.classes)
        for item in store.items():
            row = QListWidgetItem(item.text())
            row.setData(_ITEM_ROLE, item.index)
            self.items_list.addItem(row)
        counts = store.counts()
        text = " · ".join(f"{c}: {n}" for c, n in counts.items()) or "no classes"
        saved = f"saved to {store.path.name}" if store.path else "kept in memory"
        self.counts_label.setText(f"{text}<br><small>{saved}</small>")
        self._update_buttons()

    @staticmethod
    def _button_texts(store: Any) -> list[str]:
        return [f"{i + 1}. {c}" if i < 9 else c for i, c in enumerate(store.classes)]

    def _update_buttons(self) -> None:
        layer = self.layer
        volume = layer is not None and n_slices_of(layer) is not None
        n = n_slices_of(layer) if volume else 1
        for spin in (self.range_from, self.range_to):
            spin.setRange(0, max(0, n - 1))
        ranged = volume and self.target_combo.currentData() == "range"
        for w in (self.range_from, self.range_to, self.from_here_button,
                  self.to_here_button):  # fmt: skip
            w.setEnabled(ranged)
        self.target_combo.setEnabled(volume)
        self._update_region_buttons()

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.go_to(item.data(_ITEM_ROLE))

    def _on_scan_changed(self, *_args) -> None:
        self._refresh()

    def _on_layers_changed(self, _event=None) -> None:
        from napari.layers import Image, Labels

        current = self.layer
        images = [lay for lay in self._viewer.layers if isinstance(lay, Image)]
        images = [lay for lay in images if not is_result(lay)]
        ids = {lay.unique_id for lay in images}
        for uid in list(self._stores):  # labels are on disk already
            if uid not in ids:
                del self._stores[uid]
        for lay in images:
            self._keys.bind_layer(lay)
        self.scan_combo.blockSignals(True)
        self.scan_combo.clear()
        for lay in images:
            self.scan_combo.addItem(str(lay.name), lay)
        keep = [i for i, lay in enumerate(images) if lay == current]
        self.scan_combo.setCurrentIndex(keep[0] if keep else len(images) - 1)
        self.scan_combo.blockSignals(False)
        labels = [lay for lay in self._viewer.layers if isinstance(lay, Labels)]
        self.region_box.fill_labels(labels)
        self._refresh()

    def _on_active_changed(self, _event=None) -> None:
        from napari.layers import Image

        active = self._viewer.layers.selection.active
        usable = isinstance(active, Image) and not is_result(active)
        if usable and active != self.layer:
            self.set_layer(active)

    def _say(self, message: str, warn: bool = False) -> None:
        self.status.setText(message)
        self.status.setStyleSheet("color: #e3b617;" if warn else "")

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._say(message, warn=True)
        show_error(message)
