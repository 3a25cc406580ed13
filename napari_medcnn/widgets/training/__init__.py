"""Fine-tune dock widget: train on the labels of the open layers, watch it learn.

* :mod:`.widget`: ``TrainingWidget``, the panel (npe2 opens it from here).
* :mod:`.boxes`: its group boxes (model, training options, augmentation);
  :mod:`.dialogs`: checkpoint file dialogs.
* :mod:`.settings`: the panel's settings as ``train_job`` arguments.
* :mod:`.jobs`: preparing, training and publishing (no Qt); :mod:`.run`:
  one running job and its progress.
* :mod:`.plots`: learning curves and the confusion matrix.
"""

from napari_medcnn.widgets.training.widget import TrainingWidget

__all__ = ["TrainingWidget"]
