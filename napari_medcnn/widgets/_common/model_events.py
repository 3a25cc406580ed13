"""Share models between the dock widgets of one viewer (no global state).

The Classify and Saliency widgets each load a model through their public
``load_model(path)`` and expose it as ``model`` (a ``LoadedModel``).  The
Fine-tune widget hands a new checkpoint to them with :func:`publish_model`,
and the labelling and fine-tune widgets read "the current model" with
:func:`current_model`.  Both look the widgets up in the viewer's public
``viewer.window.dock_widgets`` mapping, so nothing has to subscribe and no
registry outlives the viewer; a widget docked later starts with its own
default and can load the new file through its "Model file…" button.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: milliseconds between attempts while a widget is busy, and attempts
RETRY_MS = 250
RETRIES = 120


def model_widgets(viewer: Any) -> list[Any]:
    """Docked widgets of ``viewer`` that hold a model (``load_model`` and
    ``model``): Classify and Saliency.  Empty without a window."""
    window = getattr(viewer, "window", None)
    try:
        docked = list(window.dock_widgets.values()) if window is not None else []
    except (AttributeError, RuntimeError):  # headless viewer, closing window
        return []
    out = []
    for w in docked:
        inner = getattr(w, "native", w)
        if callable(getattr(inner, "load_model", None)) and hasattr(inner, "model"):
            out.append(inner)
    return out


def current_model(viewer: Any) -> Any:
    """The ``LoadedModel`` of the first docked model widget that has one
    (Classify before Saliency, in docking order), or None."""
    for w in model_widgets(viewer):
        if getattr(w, "model", None) is not None:
            return w.model
    return None


def publish_model(viewer: Any, path: str | Path) -> list[str]:
    """Load checkpoint ``path`` in every docked Classify / Saliency widget.

    A busy widget (``load_model`` returns False while it runs a job) is
    retried every :data:`RETRY_MS` ms until it takes the model.  Returns
    the object names of the widgets that were asked.
    """
    from qtpy.QtCore import QTimer

    asked = []
    for widget in model_widgets(viewer):
        asked.append(widget.objectName() or type(widget).__name__)

        def attempt(widget=widget, left=RETRIES) -> None:
            try:
                if widget.load_model(str(path)) or left <= 0:
                    return
            except RuntimeError:  # the widget was deleted meanwhile
                return
            QTimer.singleShot(RETRY_MS, lambda: attempt(widget, left - 1))

        attempt()
    return asked
