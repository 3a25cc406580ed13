"""Model zoo: a registry of 2D/3D CNNs and a CNN+RNN, and safe checkpoints."""

from napari_medcnn.models.registry import available_models, build_model, register

__all__ = ["available_models", "build_model", "register"]
