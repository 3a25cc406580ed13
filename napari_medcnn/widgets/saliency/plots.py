"""Slice-importance curve of a CNN+RNN saliency map (matplotlib in the dock).

How much each slice drove the volume decision: gradient x input of the
target summed per slice (signed; bars), and, when the model has attention,
its weight per slice (line, right axis).  A vertical line marks the slice
napari shows; a click emits :attr:`SliceImportance.slice_clicked`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal

from napari_medcnn.widgets._common.plots import FONT, Canvas, PlotColors


class SliceImportance(Canvas):
    """Per-slice importance bars (+ attention line); click to pick a slice."""

    slice_clicked = Signal(int)

    def __init__(self, colors: PlotColors | None = None):
        super().__init__(160, colors)
        self._importance: np.ndarray | None = None
        self._attention: np.ndarray | None = None
        self._current: int | None = None
        self._vline = None
        self.mpl_connect("button_press_event", self.on_press)
        self._redraw()

    @property
    def n_slices(self) -> int:
        """Number of slices plotted (0 when empty)."""
        return 0 if self._importance is None else int(self._importance.size)

    @property
    def importance(self) -> np.ndarray | None:
        """The plotted per-slice importance (S,), or None."""
        return self._importance

    def show_importance(
        self, importance: np.ndarray, attention: np.ndarray | None = None
    ) -> None:
        """Plot ``importance`` (S,) and optional ``attention`` (S,)."""
        self._importance = np.asarray(importance, dtype=float).ravel()
        self._attention = (
            None if attention is None else np.asarray(attention, dtype=float).ravel()
        )
        self._redraw()

    def set_current(self, index: int | None) -> None:
        """Move the marker to slice ``index`` (None hides it)."""
        self._current = None if index is None else int(index)
        if self._vline is not None:
            ok = self._current is not None and 0 <= self._current < self.n_slices
            self._vline.set_visible(ok)
            if ok:
                self._vline.set_xdata([self._current, self._current])
            self.draw_idle()

    def on_press(self, event) -> None:
        """matplotlib click: emit the slice under the pointer."""
        if self._importance is None or event.xdata is None:
            return
        if event.inaxes is None or getattr(event, "button", 1) not in (1, None):
            return
        k = int(np.clip(round(float(event.xdata)), 0, self.n_slices - 1))
        self.slice_clicked.emit(k)

    def _redraw(self) -> None:
        fig = self.figure
        for ax in fig.axes[1:]:
            ax.remove()
        ax = self.ax
        ax.clear()
        self._vline = None
        self._style()
        if self._importance is None:
            ax.set_axis_off()
            self.draw_idle()
            return
        c = self.colors
        imp = self._importance
        x = np.arange(imp.size)
        ax.bar(x, imp, color=[c.accent if v >= 0 else c.muted for v in imp], width=0.8)
        ax.axhline(0, color=c.muted, linewidth=0.6)
        ax.set_xlim(-0.5, max(imp.size - 0.5, 0.5))
        ax.set_xlabel("slice (click to go there)", fontsize=FONT)
        ax.set_ylabel("gradient × input", fontsize=FONT)
        if self._attention is not None and self._attention.size == imp.size:
            twin = ax.twinx()
            twin.plot(x, self._attention, color=c.marker, linewidth=1.2)
            twin.set_ylim(0, max(1e-6, float(self._attention.max()) * 1.1))
            twin.tick_params(colors=c.text, labelsize=FONT)
            twin.set_ylabel("attention", fontsize=FONT, color=c.marker)
        self._vline = ax.axvline(0, color=c.marker, linewidth=1.4, linestyle="--")
        self.set_current(self._current)
        self.draw_idle()
