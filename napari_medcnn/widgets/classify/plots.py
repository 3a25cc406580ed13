"""Matplotlib canvases of the Classify dock widget (Qt, Agg rendering).

* :class:`ProbabilityBars`: one horizontal bar per class, the predicted
  class highlighted, its percentage written beside each bar; all bars grey
  and hatched, with "outside the model's domain" over them, when the input
  is outside the model's training domain.
* :class:`SliceCurve`: per-slice probability along a volume, with a vertical
  line at the slice napari shows; slices outside the model's domain are
  shaded grey and their points drawn as grey crosses; for sequence models
  whose record carries it, the slice importance (how much each slice drove
  the decision) as a second line on its own axis, right; a click emits
  :attr:`SliceCurve.slice_clicked` with the slice index under the pointer.

Both are :class:`~napari_medcnn.widgets._common.plots.Canvas` plots and
take their colours from the napari theme.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import Signal

from napari_medcnn.widgets._common.plots import FONT, Canvas, PlotColors


class ProbabilityBars(Canvas):
    """Horizontal probability bars, one per class; the predicted one coloured."""

    def __init__(self, colors: PlotColors | None = None):
        super().__init__(110, colors)
        self._data: tuple[list[str], list[float], int] | None = None
        self.out_of_domain = False
        self._redraw()

    def show_result(
        self,
        classes: Sequence[str],
        probabilities: Sequence[float],
        index: int,
        out_of_domain: bool = False,
    ) -> None:
        """Draw ``probabilities`` (0-1) of ``classes``; highlight ``index``,
        or grey every bar when ``out_of_domain``."""
        self._data = (list(classes), [float(p) for p in probabilities], int(index))
        self.out_of_domain = bool(out_of_domain)
        # about 28 px per bar plus the axis; no taller, or bars get fat
        height = max(110, 28 * len(self._data[0]) + 60)
        self.setMinimumHeight(height)
        self.setMaximumHeight(height + 20)
        self._redraw()

    def clear_result(self) -> None:
        """Forget the shown result."""
        self._data = None
        self._redraw()

    def bar_colors(self) -> list[str]:
        """The bars' colours, in class order (the predicted one is the accent)."""
        if self._data is None:
            return []
        classes, _probs, index = self._data
        c = self.colors
        if self.out_of_domain:
            return [c.muted] * len(classes)
        return [c.accent if i == index else c.muted for i in range(len(classes))]

    def _redraw(self) -> None:
        ax = self.ax
        ax.clear()
        self._style()
        if self._data is None:
            ax.set_axis_off()
            ax.text(
                0.5,
                0.5,
                "No result yet",
                ha="center",
                va="center",
                color=self.colors.muted,
                fontsize=FONT + 1,
                transform=ax.transAxes,
            )
            self.draw_idle()
            return
        classes, probs, index = self._data
        y = np.arange(len(classes))
        ax.barh(
            y,
            probs,
            color=self.bar_colors(),
            height=0.65,
            alpha=0.45 if self.out_of_domain else 1.0,
            hatch="//" if self.out_of_domain else None,
            edgecolor=self.colors.background if self.out_of_domain else None,
        )
        ax.set_yticks(y, labels=classes)
        ax.invert_yaxis()  # first class on top, as in the card
        ax.set_xlim(0, 1.18)  # room for the percentages
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0", "", "50%", "", "100%"])
        ax.xaxis.grid(True, color=self.colors.muted, alpha=0.4, linewidth=0.6)
        ax.set_axisbelow(True)
        for i, p in enumerate(probs):
            ax.text(
                min(p, 1.0) + 0.015,
                i,
                f"{100 * p:.1f}%",
                va="center",
                color=self.colors.text,
                fontsize=FONT,
                fontweight="bold" if i == index else "normal",
            )
        for i, tick in enumerate(ax.get_yticklabels()):
            tick.set_fontweight("bold" if i == index else "normal")
        if self.out_of_domain:
            ax.text(
                0.5,
                0.5,
                "outside the model's domain",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color=self.colors.marker,
                fontsize=FONT + 2,
                fontweight="bold",
            )
        self.draw_idle()


class SliceCurve(Canvas):
    """Per-slice probability curve; click to pick a slice.

    Two-class models plot the probability of the second class (the
    "positive" one, e.g. ``tumor``) with a 0.5 line; models with more classes
    plot one line per class, the predicted class thicker.  Slices outside
    the model's domain (``in_domain`` False) are shaded and crossed out.
    A slice importance (S,), when given, is drawn dotted against a right
    axis labelled with its method.
    """

    #: emitted with the slice index (int) under a left click on the curve
    slice_clicked = Signal(int)

    def __init__(self, colors: PlotColors | None = None):
        super().__init__(170, colors)
        self._probs: np.ndarray | None = None
        self._classes: list[str] = []
        self._in_domain: np.ndarray | None = None
        self._importance: np.ndarray | None = None
        self._importance_method = ""
        self._index = 0
        self._current: int | None = None
        self._vline = None
        self._marker_text = None
        self.mpl_connect("button_press_event", self.on_press)
        self._redraw()

    @property
    def n_slices(self) -> int:
        """Number of slices plotted (0 when empty)."""
        return 0 if self._probs is None else int(self._probs.shape[0])

    @property
    def current(self) -> int | None:
        """The slice the vertical marker is on, or None."""
        return self._current

    @property
    def importance(self) -> np.ndarray | None:
        """The slice importance drawn (S,), or None."""
        return self._importance

    @property
    def out_of_domain_slices(self) -> list[int]:
        """The slices drawn as outside the model's domain."""
        if self._in_domain is None:
            return []
        return [int(i) for i in np.flatnonzero(~self._in_domain)]

    def show_curve(
        self,
        slice_probabilities: np.ndarray,
        classes: Sequence[str],
        index: int,
        in_domain: Sequence[bool] | None = None,
        importance: Sequence[float] | None = None,
        importance_method: str | None = None,
    ) -> None:
        """Plot ``slice_probabilities`` (S, K); ``index`` is the predicted
        class; ``in_domain`` (S,) marks the slices inside the model's
        domain (None: all); ``importance`` (S,) how much each slice drove
        the decision (None, or another length: not drawn), computed by
        ``importance_method``."""
        self._probs = np.asarray(slice_probabilities, dtype=float).reshape(
            -1, len(classes)
        )
        self._in_domain = (
            None
            if in_domain is None or len(in_domain) != len(self._probs)
            else np.asarray(in_domain, bool)
        )
        self._importance = (
            None
            if importance is None or len(importance) != len(self._probs)
            else np.asarray(importance, dtype=float)
        )
        self._importance_method = str(importance_method or "")
        self._classes = list(classes)
        self._index = int(index)
        self._redraw()

    def set_current(self, index: int | None) -> None:
        """Move the vertical marker to slice ``index`` (None hides it)."""
        self._current = None if index is None else int(index)
        if self._vline is None:
            return
        visible = self._current is not None and 0 <= self._current < self.n_slices
        self._vline.set_visible(visible)
        self._marker_text.set_visible(visible)
        if visible:
            k = self._current
            self._vline.set_xdata([k, k])
            self._marker_text.set_text(self.marker_label(k))
        self.draw_idle()

    def marker_label(self, k: int) -> str:
        """The text beside the marker: the slice and its probability."""
        p = self._probs[k]
        out = "" if k not in self.out_of_domain_slices else " (outside domain)"
        if len(self._classes) == 2:
            return f"slice {k}: P({self._classes[1]}) = {p[1]:.2f}{out}"
        best = int(np.argmax(p))
        return f"slice {k}: {self._classes[best]} {p[best]:.2f}{out}"

    def on_press(self, event) -> None:
        """matplotlib ``button_press_event`` handler: emit the clicked slice."""
        if self._probs is None or event.xdata is None:
            return
        if event.inaxes not in self.figure.axes:  # the importance axis too
            return
        if getattr(event, "button", 1) not in (1, None):
            return
        idx = int(np.clip(round(float(event.xdata)), 0, self.n_slices - 1))
        self.slice_clicked.emit(idx)

    def _redraw(self) -> None:
        for extra in self.figure.axes[1:]:  # the importance axis
            extra.remove()
        ax = self.ax
        ax.clear()
        self._vline = self._marker_text = None
        self._style()
        if self._probs is None:
            ax.set_axis_off()
            self.draw_idle()
            return
        c = self.colors
        probs = self._probs
        x = np.arange(probs.shape[0])
        if len(self._classes) == 2:
            ax.plot(x, probs[:, 1], color=c.accent, linewidth=1.6)
            ax.fill_between(x, probs[:, 1], color=c.accent, alpha=0.25, linewidth=0)
            ax.axhline(0.5, color=c.muted, linestyle="--", linewidth=0.8)
            ax.set_ylabel(f"P({self._classes[1]})", fontsize=FONT)
        else:
            for k, name in enumerate(self._classes):
                ax.plot(
                    x,
                    probs[:, k],
                    linewidth=2.0 if k == self._index else 1.0,
                    label=name,
                )
            legend = ax.legend(fontsize=FONT - 1, loc="upper right", frameon=False)
            for text in legend.get_texts():
                text.set_color(c.text)
            ax.set_ylabel("probability", fontsize=FONT)
        self._mark_out_of_domain(ax, probs)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(-0.5, max(probs.shape[0] - 0.5, 0.5))
        self._draw_importance(ax, x)
        ax.set_xlabel("slice (click to go there)", fontsize=FONT)
        self._vline = ax.axvline(0, color=c.marker, linewidth=1.4)
        self._marker_text = ax.text(
            0.01,
            0.98,
            "",
            transform=ax.transAxes,
            ha="left",
            va="top",
            color=c.marker,
            fontsize=FONT,
        )
        self.set_current(self._current)
        self.draw_idle()

    def _draw_importance(self, ax, x: np.ndarray) -> None:
        """The slice importance, dotted, against a right axis from 0."""
        imp = self._importance
        if imp is None:
            return
        c = self.colors
        twin = ax.twinx()
        twin.plot(x, imp, color=c.text, linestyle=":", marker=".", linewidth=1.2)
        twin.set_ylim(0, max(1e-6, float(np.nanmax(imp))) * 1.1)
        twin.tick_params(colors=c.text, labelsize=FONT)
        for spine in twin.spines.values():
            spine.set_color(c.muted)
        method = f" ({self._importance_method})" if self._importance_method else ""
        twin.set_ylabel(f"importance{method}", fontsize=FONT, color=c.text)

    def _mark_out_of_domain(self, ax, probs: np.ndarray) -> None:
        """Shade runs of out-of-domain slices; cross their points out."""
        out = self.out_of_domain_slices
        if not out:
            return
        c = self.colors
        runs: list[list[int]] = []
        for i in out:
            if runs and i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        for k, (a, b) in enumerate(runs):
            ax.axvspan(
                a - 0.5,
                b + 0.5,
                color=c.muted,
                alpha=0.35,
                linewidth=0,
                label="outside domain" if k == 0 else None,
            )
        col = 1 if len(self._classes) == 2 else self._index
        ax.plot(out, probs[out, col], "x", color=c.muted, markersize=4)
        legend = ax.legend(fontsize=FONT - 1, loc="upper right", frameon=False)
        for text in legend.get_texts():
            text.set_color(c.text)
