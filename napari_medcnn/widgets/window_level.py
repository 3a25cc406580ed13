"""Window / level dock widget: CT presets, the file's window, or a free window.

A stateful panel (a magicgui ``Container``): pick an image layer, then a
preset (CT layers only), the window stored in the file
(``layer.metadata['window']``) or a free center/width.  Every change is
applied at once to ``layer.contrast_limits``; the panel follows the viewer's
active layer and picks up contrast changes made elsewhere (e.g. the layer
controls' slider).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label

from napari_medcnn.io.windows import CT_PRESETS, limits_to_window, window_to_limits

if TYPE_CHECKING:
    import napari

FILE_WINDOW = "File window"
FREE = "Free"
# Spin-box bounds: wide enough for CT (HU), MR and float images alike.
_BOUND = 1e7


def file_window(layer: Any) -> tuple[float, float] | None:
    """The ``(center, width)`` stored in ``layer.metadata['window']``, or None.

    Accepts the reader's ``{"center": c, "width": w}`` and a ``(c, w)`` pair.
    """
    win = getattr(layer, "metadata", {}).get("window")
    try:
        if isinstance(win, dict):
            c, w = float(win["center"]), float(win["width"])
        elif win is not None:
            c, w = (float(v) for v in win)
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(c) and math.isfinite(w) and w > 0):
        return None
    return (c, w)


def window_options(layer: Any) -> dict[str, tuple[float, float] | None]:
    """Preset name -> ``(center, width)`` offered for ``layer``, in menu order.

    CT layers (``metadata['modality'] == 'CT'``) get the CT presets; every
    layer gets the file window when it has one, and ``"Free"`` (value None).
    """
    options: dict[str, tuple[float, float] | None] = {}
    if layer is None:
        return {FREE: None}
    if str(layer.metadata.get("modality") or "").upper() == "CT":
        options.update(CT_PRESETS)
    fw = file_window(layer)
    if fw is not None:
        options[FILE_WINDOW] = fw
    options[FREE] = None
    return options


def _label(name: str, window: tuple[float, float] | None) -> str:
    if window is None:
        return name
    c, w = window
    return f"{name.capitalize()}  (L {c:g} / W {w:g})"


class WindowLevelWidget(Container):
    """Dock widget that sets an image layer's display window.

    Args:
        viewer: the napari viewer whose image layers are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self._watched = None  # layer whose contrast_limits events we follow
        self._layer = ComboBox(label="Layer", choices=self._image_layers)
        # callables, so that a reset_choices (napari calls it on every layer
        # change) recomputes them instead of restoring a stale list
        self._preset = ComboBox(label="Window", choices=self._preset_choices)
        self._center = FloatSpinBox(
            label="Center (level)", min=-_BOUND, max=_BOUND, step=1.0
        )
        self._width = FloatSpinBox(label="Width", min=1e-3, max=2 * _BOUND, step=1.0)
        self._range = Label(label="Display range", value="")
        super().__init__(
            widgets=[self._layer, self._preset, self._center, self._width, self._range],
            labels=True,
        )
        self.native.setObjectName("napari_medcnn_window_level")
        self._layer.changed.connect(self._on_layer_changed)
        self._preset.changed.connect(self._on_preset_changed)
        self._center.changed.connect(self._on_free_changed)
        self._width.changed.connect(self._on_free_changed)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.selection.events.active.connect(self._on_active_changed)
        self._on_layers_changed()
        self._on_active_changed()
        self._on_layer_changed(self._layer.value)

    # -- public API ------------------------------------------------------
    @property
    def layer(self):
        """The image layer the panel controls (or None)."""
        return self._layer.value

    def apply(self, center: float, width: float) -> None:
        """Set the selected layer's contrast limits to the window (center, width)."""
        layer = self._layer.value
        if layer is None:
            return
        layer.contrast_limits = window_to_limits(center, width)

    def set_preset(self, name: str) -> None:
        """Select and apply a preset by name (``"lung"``, ``"File window"``...)."""
        self._preset.value = name

    # -- choices ---------------------------------------------------------
    def _image_layers(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not layer.rgb
        ]

    def _preset_choices(self, _widget=None) -> list[tuple[str, str]]:
        options = window_options(self._layer.value)
        return [(_label(k, v), k) for k, v in options.items()]

    def _on_layers_changed(self, _event=None) -> None:
        self._layer.reset_choices()
        # reset_choices keeps the value when it still exists; a removed layer
        # falls back to the first one, which changed() then picks up.
        if self._layer.value is not self._watched:
            self._on_layer_changed(self._layer.value)

    def _on_active_changed(self, _event=None) -> None:
        active = self._viewer.layers.selection.active
        if active is None:
            return
        for _name, layer in self._image_layers():
            if layer == active:  # active may be a PublicOnlyProxy: no `is`
                if layer not in self._layer.choices:  # inserted just now
                    self._layer.reset_choices()
                self._layer.value = layer
                return

    # -- sync ------------------------------------------------------------
    def _on_layer_changed(self, layer) -> None:
        if self._watched is not None:
            self._watched.events.contrast_limits.disconnect(self._on_limits_changed)
        self._watched = layer
        with self._preset.changed.blocked():
            self._preset.reset_choices()
        for w in (self._preset, self._center, self._width):
            w.enabled = layer is not None
        if layer is None:
            self._range.value = "no image layer"
            return
        layer.events.contrast_limits.connect(self._on_limits_changed)
        lo, hi = layer.contrast_limits_range
        step = _nice_step(hi - lo)
        self._center.step = step
        self._width.step = step
        self._on_limits_changed()

    def _on_limits_changed(self, _event=None) -> None:
        """Show the layer's current window, and the preset it matches if any."""
        layer = self._layer.value
        if layer is None:
            return
        lo, hi = layer.contrast_limits
        if not hi > lo:
            return
        center, width = limits_to_window(lo, hi)
        with self._center.changed.blocked(), self._width.changed.blocked():
            self._center.value = center
            self._width.value = width
        match = FREE
        for name, window in window_options(layer).items():
            if window is not None and _close(window, (center, width)):
                match = name
                break
        with self._preset.changed.blocked():
            self._preset.value = match
        self._range.value = f"{lo:g} to {hi:g}"

    def _on_preset_changed(self, name: str) -> None:
        window = window_options(self._layer.value).get(name)
        if window is not None:
            self.apply(*window)

    def _on_free_changed(self, _value=None) -> None:
        if self._width.value > 0:  # the spin box may round a tiny width to 0
            self.apply(self._center.value, self._width.value)


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for x, y in zip(a, b))


def _nice_step(span: float) -> float:
    """A round spin-box step, about 1/200 of the layer's intensity span."""
    if not (math.isfinite(span) and span > 0):
        return 1.0
    return float(10 ** math.floor(math.log10(span / 200.0))) if span < 200 else 1.0
