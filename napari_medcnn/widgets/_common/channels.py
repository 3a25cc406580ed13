"""The Classify and Saliency widgets' list of image layers: ticked layers are
the channels; and how those layers become the model's channels.

The order of the ticked layers in the list is the channel order the model
receives; the user reorders them by dragging or with the Up / Down buttons
(:meth:`ChannelList.move_current`).  Layers are held as item data and
compared with ``==`` (the viewer may hand out ``PublicOnlyProxy`` wrappers,
for which ``is`` fails).

Gathering the ticked layers (no Qt widgets; the core is imported lazily):

* :func:`order_for_card` puts the layers in the order of the channels the
  model card names (T1, T2, FLAIR...) when their names say so without
  doubt, and says what does not fit
  (:func:`napari_medcnn.preprocessing.channel_names.match_channels`).
* :func:`channel_inputs` reads each layer's geometry
  (:func:`layer_geometries`) and checks, without touching a voxel, that
  the layers can share the first one's grid; it refuses layers that hardly
  overlap or mix 2D and 3D (``ValueError``) and says which will be
  resampled.  The resampling itself (:meth:`ChannelInputs.images`) runs in
  the worker: :func:`aligned` wraps a job so that it does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem

from napari_medcnn.widgets._common.layers import contains, level0

_LAYER_ROLE = Qt.ItemDataRole.UserRole


class ChannelList(QListWidget):
    """Checkable, reorderable list of image layers.

    Signals:
        channels_changed: a tick or the order of the items changed.
    """

    channels_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setToolTip(
            "Tick the image layer(s) to classify. With several layers, their "
            "order here is the channel order the model receives: drag to "
            "reorder, or use Up / Down."
        )
        self.itemChanged.connect(self._emit)
        self.model().rowsMoved.connect(self._emit)

    # -- queries -----------------------------------------------------------
    def layers(self) -> list[Any]:
        """Every listed layer, in list order."""
        return [self.item(r).data(_LAYER_ROLE) for r in range(self.count())]

    def checked(self) -> list[Any]:
        """The ticked layers, in list order (= channel order)."""
        out = []
        for r in range(self.count()):
            item = self.item(r)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(_LAYER_ROLE))
        return out

    # -- changes -----------------------------------------------------------
    def sync(self, layers: Sequence[Any]) -> None:
        """Show ``layers`` (image layers of the viewer): keep the order and
        ticks of those already listed, drop removed ones, append new ones
        unticked, and refresh names."""
        kept = [(lay, chk) for lay, chk in self._entries() if contains(layers, lay)]
        new = [
            (lay, False) for lay in layers if not contains([k for k, _ in kept], lay)
        ]
        self._fill(kept + new)

    def set_checked(self, layers: Sequence[Any]) -> None:
        """Tick exactly ``layers``, moved to the top in the given order."""
        rest = [lay for lay in self.layers() if not contains(layers, lay)]
        listed = [lay for lay in layers if contains(self.layers(), lay)]
        self._fill([(lay, True) for lay in listed] + [(lay, False) for lay in rest])

    def move_current(self, delta: int) -> None:
        """Move the selected item up (``-1``) or down (``+1``)."""
        row = self.currentRow()
        dest = row + delta
        if row < 0 or not 0 <= dest < self.count():
            return
        entries = self._entries()
        entries.insert(dest, entries.pop(row))
        self._fill(entries)
        self.setCurrentRow(dest)

    # -- internals ---------------------------------------------------------
    def _is_checked(self, row: int) -> bool:
        return self.item(row).checkState() == Qt.CheckState.Checked

    def _fill(self, entries: Sequence[tuple[Any, bool]]) -> None:
        before = [(lay.name, chk) for lay, chk in self._entries()]
        self.blockSignals(True)
        try:
            self.clear()
            for layer, checked in entries:
                item = QListWidgetItem(str(layer.name))
                item.setData(_LAYER_ROLE, layer)
                item.setFlags(
                    Qt.ItemFlag.ItemIsEnabled
                    | Qt.ItemFlag.ItemIsSelectable
                    | Qt.ItemFlag.ItemIsUserCheckable
                    | Qt.ItemFlag.ItemIsDragEnabled
                )
                item.setCheckState(
                    Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                )
                self.addItem(item)
        finally:
            self.blockSignals(False)
        if [(lay.name, chk) for lay, chk in entries] != before:
            self.channels_changed.emit()

    def _entries(self) -> list[tuple[Any, bool]]:
        return [
            (self.item(r).data(_LAYER_ROLE), self._is_checked(r))
            for r in range(self.count())
        ]

    def _emit(self, *_args) -> None:
        self.channels_changed.emit()


# -- gathering the ticked layers as channels ---------------------------------------
def order_for_card(layers: Sequence[Any], card: Any) -> tuple[list[Any], list[str]]:
    """``layers`` in the order of the channels ``card`` names, when the
    layers' names, series descriptions or modalities tell it unambiguously;
    otherwise as given.

    Returns:
        (layers, notes): a note when the order changed, and the warnings of
        :func:`~napari_medcnn.preprocessing.channel_names.match_channels`.
    """
    from napari_medcnn.preprocessing.channel_names import match_channels

    layers = list(layers)
    if card is None or not layers:
        return layers, []
    infos = [{**(lay.metadata or {}), "name": str(lay.name)} for lay in layers]
    order, warnings = match_channels(card.channel_names, infos)
    if order is None or list(order) == list(range(len(layers))):
        return layers, warnings
    ordered = [layers[i] for i in order]
    pairs = ", ".join(
        f"{want} = '{lay.name}'"
        for want, lay in zip(card.channel_names, ordered, strict=True)
    )
    return ordered, [f"Channels put in the model's order: {pairs}."]


def layer_geometries(layers: Sequence[Any]) -> list[Any]:
    """The :class:`~napari_medcnn.preprocessing.channels.ChannelGeometry`
    of each layer's full-resolution data.

    Volumes the plugin's reader loaded, still where it put them, are placed
    by their index -> LPS affine (``metadata["affine"]``), so series of
    different orientations line up in the patient; when any layer lacks one
    (or was moved), every layer is placed by its napari transform (scale,
    translate, rotate, shear and affine, mm), as the viewer shows it.

    Raises:
        ValueError: a layer is not 2D or 3D (named).
    """
    from napari_medcnn.preprocessing.channels import ChannelGeometry

    shapes = [tuple(np.shape(level0(lay)))[: lay.ndim] for lay in layers]
    lps = [_reader_geometry(lay, shape) for lay, shape in zip(layers, shapes)]
    if all(g is not None for g in lps):
        return lps
    out = []
    for lay, shape in zip(layers, shapes, strict=True):
        n = len(shape)
        origin = np.asarray(lay.data_to_world(np.zeros(n)), dtype=float)
        m = np.eye(n + 1)
        m[:n, n] = origin
        for k in range(n):
            m[:n, k] = np.asarray(lay.data_to_world(np.eye(n)[k]), float) - origin
        try:
            out.append(ChannelGeometry(shape, m, "napari"))
        except ValueError as exc:
            raise ValueError(f"'{lay.name}': {exc}") from None
    return out


def _reader_geometry(layer: Any, shape: tuple[int, ...]) -> Any:
    """The LPS geometry the reader recorded, if the layer still shows it."""
    from napari_medcnn.preprocessing.channels import ChannelGeometry

    md = layer.metadata or {}
    geometry = ChannelGeometry.from_metadata(shape, md)
    if geometry is None:
        return None
    n = len(shape)
    unmoved = (
        np.allclose(layer.scale, md.get("spacing_mm", ()), rtol=1e-6)
        and np.allclose(layer.translate, md.get("origin_mm", ()), atol=1e-6)
        and np.allclose(layer.rotate, np.eye(n), atol=1e-9)
        and np.allclose(layer.shear, 0.0, atol=1e-9)
        and np.allclose(layer.affine.affine_matrix, np.eye(n + 1), atol=1e-9)
    )
    return geometry if unmoved else None


@dataclass
class ChannelInputs:
    """The ticked layers' data, ready to become one model input.

    Attributes:
        arrays: each layer's full-resolution data, in channel order.
        geometries: their ``ChannelGeometry``.
        names: the layer names.
        resample: indices of the channels to resample onto the first grid.
        messages: one per such channel (what, from which voxel size, how
            much of the first grid lies outside it).
    """

    arrays: list[Any]
    geometries: list[Any]
    names: list[str]
    resample: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def images(self) -> list[Any]:
        """The channels on the first one's grid (resampling as planned; run
        it in a worker: a volume takes about a second)."""
        from napari_medcnn.preprocessing.channels import resample_onto

        out = list(self.arrays)
        for k in self.resample:
            out[k] = resample_onto(
                np.asarray(out[k]), self.geometries[k], self.geometries[0]
            )
        return out


def channel_inputs(layers: Sequence[Any]) -> ChannelInputs:
    """Check that ``layers`` (channel order) can share the first one's grid
    and plan which to resample (cheap: no voxel is read).

    The messages say which layers will be resampled, and warn when the
    layers' DICOM frames of reference differ (positions in mm of two
    unregistered sessions need not correspond).

    Raises:
        ValueError: 2D and 3D layers mixed, or a layer that covers (almost)
            none of the first one's field of view; the message names them.
    """
    from napari_medcnn.preprocessing.channels import check_alignment

    layers = list(layers)
    names = [str(lay.name) for lay in layers]
    geometries = layer_geometries(layers)
    todo, messages = check_alignment(geometries, names)
    frames = {(lay.metadata or {}).get("frame_of_reference_uid") for lay in layers}
    if len(frames) > 1 and None not in frames:
        messages.append(
            "The ticked layers come from different DICOM frames of reference "
            "(FrameOfReferenceUID): their positions in mm may not correspond."
        )
    return ChannelInputs(
        [level0(lay) for lay in layers], geometries, names, todo, messages
    )


def aligned(job: Callable[..., Generator]) -> Callable[..., Generator]:
    """``job(images, *args, **kwargs)`` as a job of ``(inputs: ChannelInputs,
    *args, **kwargs)`` that first puts the channels on one grid, in the same
    worker thread."""

    def run(inputs: ChannelInputs, *args: Any, **kwargs: Any) -> Generator:
        return (yield from job(inputs.images(), *args, **kwargs))

    return run
