"""What the widgets' matplotlib plots share (Qt, Agg rendering).

* :class:`PlotColors` and :func:`theme_colors`: plot colours matching the
  napari theme.
* :class:`Canvas`: a one-axes ``FigureCanvasQTAgg`` on a
  :class:`matplotlib.figure.Figure` (never pyplot, so no global figure
  state), styled with those colours; the Classify and Saliency plots
  derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

#: Font size (points) of every plot text; small, for a dock.
FONT = 8


@dataclass(frozen=True)
class PlotColors:
    """Colours (hex) of the plots, matching the napari theme."""

    background: str = "#23242b"
    text: str = "#f0f1f2"
    muted: str = "#565f6c"
    accent: str = "#4560c4"
    marker: str = "#e3b617"


def theme_colors(theme_name: str) -> PlotColors:
    """Plot colours for a napari theme name (``dark``, ``light``...).

    The theme's own accent and warning colours are too pale on a light
    background, so light themes get darker ones.
    """
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_name)
        background = theme.background.as_hex()
        r, g, b = theme.background.as_rgb_tuple()[:3]
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 128
        return PlotColors(
            background=background,
            text=theme.text.as_hex(),
            muted=theme.secondary.as_hex(),
            accent=theme.current.as_hex() if dark else "#3653b3",
            marker=theme.warning.as_hex() if dark else "#b35c00",
        )
    except Exception:  # unknown or "system" theme: keep readable defaults
        return PlotColors()


class Canvas(FigureCanvasQTAgg):
    """A one-axes canvas with theme colours and a minimum height (px)."""

    def __init__(self, min_height: int, colors: PlotColors | None = None):
        fig = Figure(figsize=(4.0, min_height / 100.0), dpi=100, layout="constrained")
        super().__init__(fig)
        self.ax = fig.add_subplot()
        self.colors = colors or PlotColors()
        self.setMinimumHeight(min_height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_colors(self, colors: PlotColors) -> None:
        """Re-colour the canvas (napari theme changed)."""
        self.colors = colors
        self._redraw()

    def _style(self) -> None:
        c = self.colors
        self.figure.set_facecolor(c.background)
        ax = self.ax
        ax.set_facecolor(c.background)
        ax.tick_params(colors=c.text, labelsize=FONT)
        for spine in ax.spines.values():
            spine.set_color(c.muted)
        ax.xaxis.label.set_color(c.text)
        ax.yaxis.label.set_color(c.text)
        ax.title.set_color(c.text)

    def _redraw(self) -> None:  # overridden by each plot
        self.draw_idle()
