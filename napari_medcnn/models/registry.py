"""Build models by name with keyword arguments.

``build_model("resnet", spatial_dims=3, in_channels=2, num_classes=4)`` works
for every entry: changing dims, channels or classes needs no new code.  The
model card stores ``(name, kwargs)`` so a checkpoint rebuilds its network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# Keyword arguments every entry understands.
COMMON_ARGS = ("spatial_dims", "in_channels", "num_classes")


def register(
    name: str,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model factory available under ``name``."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _ensure_loaded() -> None:
    # Importing the modules runs their @register decorators.
    from napari_medcnn.models import (  # noqa: F401
        cnn_rnn,
        ensemble,
        lesion_fcn,
        monai_nets,
        seed_cnn,
    )


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the model registered as ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        TypeError: an argument the model does not take.
    """
    _ensure_loaded()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    model = factory(**kwargs)
    model.arch_name = name  # type: ignore[attr-defined]
    model.arch_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return model
