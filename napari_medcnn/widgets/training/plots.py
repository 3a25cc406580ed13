"""Matplotlib canvases of the Fine-tune widget (Qt, Agg, no pyplot).

* :class:`LearningCurves`: training / validation loss (top) and validation
  accuracy and AUC (bottom) per epoch, redrawn after every epoch.
* :class:`ConfusionPlot`: the validation confusion matrix with counts.

Colours follow the napari theme (``_common.plots.theme_colors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtWidgets import QSizePolicy

from napari_medcnn.widgets._common.plots import FONT, PlotColors


class _Figure(FigureCanvasQTAgg):
    # a fixed layout: matplotlib's constrained layout costs a few hundred ms
    # per draw on a busy 2-core machine, all of it on napari's event loop
    def __init__(self, rows: int, height: int, colors: PlotColors | None, **adjust):
        fig = Figure(figsize=(4.0, height / 100.0), dpi=100)
        fig.subplots_adjust(**({"left": 0.16, "right": 0.97, "top": 0.93,
                                "bottom": 0.15, "hspace": 0.3} | adjust))  # fmt: skip
        super().__init__(fig)
        self.axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
        self.colors = colors or PlotColors()
        self.setMinimumHeight(height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_colors(self, colors: PlotColors) -> None:
        """Follow a napari theme change."""
        self.colors = colors
        self.redraw()

    def _style(self, ax) -> None:
        c = self.colors
        self.figure.set_facecolor(c.background)
        ax.set_facecolor(c.background)
        ax.tick_params(colors=c.text, labelsize=FONT)
        for spine in ax.spines.values():
            spine.set_color(c.muted)
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            label.set_color(c.text)

    def redraw(self) -> None:  # overridden
        self.draw_idle()


_SERIES = (  # axis, key, style, colour attribute, label
    (0, "train_loss", "-o", "accent", "train"),
    (0, "val_loss", "-o", "marker", "validation"),
    (1, "train_accuracy", "-", "accent", "train acc."),
    (1, "val_accuracy", "-o", "marker", "val acc."),
    (1, "val_auc", "--", "text", "val AUC"),
)


class LearningCurves(_Figure):
    """Loss and accuracy/AUC per epoch; k-fold runs show the current fold.

    The lines are made once and only their data change per epoch, so an
    update costs one small Agg draw on napari's event loop.
    """

    def __init__(self, colors: PlotColors | None = None):
        super().__init__(2, 270, colors)
        self.history: list[dict[str, float]] = []
        self.title = ""
        self._lines = []
        for ax_i, _key, style, _color, label in _SERIES:
            (line,) = self.axes[ax_i].plot([], [], style, ms=3, label=label)
            self._lines.append(line)
        self.axes[0].set_ylabel("loss", fontsize=FONT)
        self.axes[1].set_ylabel("acc. / AUC", fontsize=FONT)
        self.axes[1].set_xlabel("epoch", fontsize=FONT)
        self.axes[1].set_ylim(-0.02, 1.02)
        self.redraw()

    def clear(self, title: str = "") -> None:
        """Forget the curves (a new run or fold starts)."""
        self.history = []
        self.title = title
        self.redraw()

    def add_epoch(self, row: dict[str, float], title: str | None = None) -> None:
        """Append one epoch's metrics (``train_loss``, ``val_loss``,
        ``train_accuracy``, ``val_accuracy``, ``val_auc``) and redraw."""
        if title is not None and title != self.title:
            self.history, self.title = [], title
        self.history.append(dict(row))
        self.redraw()

    def redraw(self) -> None:
        c = self.colors
        h = self.history
        x = np.arange(1, len(h) + 1)
        for ax in self.axes:
            self._style(ax)
        for line, (_ax, key, _style, color, _label) in zip(self._lines, _SERIES):
            line.set_data(x, [float(r.get(key, np.nan)) for r in h])
            line.set_color(getattr(c, color))
        loss = self.axes[0]
        if h:
            loss.relim()
            loss.autoscale_view(scalex=False)
        else:  # nothing yet: a plain 0-1 frame rather than matplotlib's +-0.05
            loss.set_ylim(0.0, 1.0)
        for ax, where in zip(self.axes, ("upper right", "lower right")):
            ax.set_xlim(0.5, max(2, len(h)) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
            leg = ax.legend(fontsize=FONT - 1, frameon=False, loc=where)
            for t in leg.get_texts():
                t.set_color(c.text)
        title = self.title or ("" if h else "curves appear here during training")
        loss.set_title(title, fontsize=FONT, color=c.text)
        self.draw_idle()


class ConfusionPlot(_Figure):
    """Confusion matrix (rows: true class, columns: predicted) with counts."""

    def __init__(self, colors: PlotColors | None = None):
        super().__init__(1, 170, colors, left=0.28, bottom=0.3)
        self.matrix: np.ndarray | None = None
        self.classes: list[str] = []
        self.redraw()

    def show_matrix(self, matrix: Sequence[Sequence[int]], classes: Sequence[str]):
        """Draw ``matrix`` (K x K counts) for ``classes``."""
        self.matrix = np.asarray(matrix, dtype=float)
        self.classes = [str(c) for c in classes]
        self.redraw()

    def redraw(self) -> None:
        ax = self.axes[0]
        ax.clear()
        self._style(ax)
        m = self.matrix
        if m is None or m.size == 0:
            ax.set_axis_off()
            self.draw_idle()
            return
        ax.set_axis_on()
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1.0, float(m.max())))
        k = len(self.classes)
        ax.set_xticks(range(k), self.classes, fontsize=FONT, rotation=20)
        ax.set_yticks(range(k), self.classes, fontsize=FONT)
        ax.set_xlabel("predicted", fontsize=FONT)
        ax.set_ylabel("true", fontsize=FONT)
        for (i, j), v in np.ndenumerate(m):
            dark = v > 0.6 * max(1.0, float(m.max()))
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=FONT,
                    color="white" if dark else "black")  # fmt: skip
        self.draw_idle()


def metrics_html(summary: dict[str, Any], colors: PlotColors) -> str:
    """Accuracy, AUC, per-class precision/recall/F1 and the recommendation."""
    import html

    esc = html.escape
    lines = []
    acc, auc = summary.get("accuracy"), summary.get("auc")
    head = []
    if acc is not None:
        head.append(f"accuracy {acc:.3f}")
    if auc is not None:
        head.append(f"AUC {auc:.3f}")
    if head:
        lines.append("<b>Validation:</b> " + ", ".join(head))
    per = summary.get("per_class") or []
    if isinstance(per, list):  # one dict per class, in class order
        per = dict(zip(summary.get("classes") or range(len(per)), per))
    if per:
        rows = "".join(
            f"<tr><td>{esc(str(c))}</td>"
            + "".join(
                f"<td align='right'>{float(m.get(k, 0) or 0):.2f}</td>"
                for k in ("precision", "recall", "f1")
            )
            + f"<td align='right'>{int(m.get('support', 0) or 0)}</td></tr>"
            for c, m in per.items()
        )
        lines.append(
            "<table cellspacing='4'><tr><th>class</th><th>prec.</th><th>recall"
            f"</th><th>F1</th><th>n</th></tr>{rows}</table>"
        )
    advice = summary.get("advice") or {}
    if advice:
        lines.append(
            f"<b style='color:{colors.accent}'>{esc(advice.get('verdict', ''))}"
            f"</b>: {esc(advice.get('reason', ''))}"
        )
    return "<br>".join(lines)
