"""Classify dock widget: run a CNN checkpoint on image layers, show the result.

* :mod:`.widget`: ``ClassifyWidget``, the panel (npe2 opens it from here).
* :mod:`.jobs`: the worker job and the input checks (no Qt).
* :mod:`.view`: the result's summary text and plots; :mod:`.plots`: the
  probability bars and the per-slice curve; :mod:`.dialogs`: export dialog.
"""

from napari_medcnn.widgets.classify.widget import ClassifyWidget

__all__ = ["ClassifyWidget"]
