"""Label images dock widget: image, slice, volume and region labels.

* :mod:`.widget`: ``LabellingWidget``, the panel (npe2 opens it from here).
* :mod:`.boxes`: its group boxes (classes, target, region labels).
* :mod:`.shortcuts`: keys 1–9 and 0 while the panel is open.
* :mod:`.regions`: region labels, the probability map and "Next case";
  :mod:`.jobs`: their worker jobs (no Qt).

The label store of a layer (its sidecar) is in ``_common.labels``, shared
with the Fine-tune widget.
"""

from napari_medcnn.widgets.labelling.widget import LabellingWidget

__all__ = ["LabellingWidget"]
