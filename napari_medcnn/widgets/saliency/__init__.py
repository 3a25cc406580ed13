"""Saliency dock widget: where did the model look, and how far to trust it.

* :mod:`.widget`: ``SaliencyWidget``, the panel (npe2 opens it from here).
* :mod:`.jobs`: the worker job, the offered methods and the input checks;
  :mod:`.texts`: a map's summary and trust alerts (no Qt).
* :mod:`.controls`: method choice, method parameters and display controls.
* :mod:`.layers`: overlays as napari layers, side by side, export (no Qt
  widgets); :mod:`.plots`: the slice-importance curve; :mod:`.dialogs`.
"""

from napari_medcnn.widgets.saliency.widget import SaliencyWidget

__all__ = ["SaliencyWidget"]
