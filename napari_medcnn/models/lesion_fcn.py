"""A full-resolution fully convolutional network for small focal findings.

Stacked 3x3 convolutions with growing dilation see a neighbourhood of
about 35 pixels (about 7 cm at 2 mm pixels) without any downsampling, so a
lesion of two or three pixels keeps its own pixels in the last feature map.
That map is what a dense ("evidence") head reads when lesion masks supervise
a volume model (:class:`~napari_medcnn.models.cnn_rnn.CNNRNN` with
``evidence=True``); as a 2D classifier the network pools it (mean and max).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from napari_medcnn.models.registry import register


class LesionFCN(nn.Module):
    """Dilated fully convolutional trunk + mean/max pooled linear head.

    Args:
        spatial_dims: 2 only (a slice network).
        in_channels: input channels.
        num_classes: output classes of the 2D head.
        widths: channels of the convolutions, one per layer.
        dilations: dilation of each layer (same length as ``widths``).
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.1: no unit can
            die, which a dense loss on rare lesion pixels otherwise tends
            to cause early in training).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: tuple[int, ...] = (24, 24, 32, 32, 32, 32),
        dilations: tuple[int, ...] = (1, 1, 2, 4, 8, 1),
        activation: str = "relu",
    ):
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(
                f"lesion_fcn reads slices (spatial_dims=2), not {spatial_dims}D"
            )
        if len(widths) != len(dilations) or not widths:
            raise ValueError("widths and dilations must have the same, non-zero length")
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(
                f"activation must be relu or leaky_relu, not {activation!r}"
            )
        layers: list[nn.Module] = []
        prev = in_channels
        for w, d in zip(widths, dilations):
            layers += [
                nn.Conv2d(prev, w, 3, padding=d, dilation=d, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.1),
            ]
            prev = w
        self.features = nn.Sequential(*layers)
        self.feature_dim = 2 * prev
        self.head = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Mean and max of the last feature map, (B, ``feature_dim``)."""
        f = self.features(x)
        return torch.cat([f.mean(dim=(-2, -1)), f.amax(dim=(-2, -1))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@register("lesion_fcn")
def lesion_fcn(**kwargs) -> nn.Module:
    """Dilated full-resolution FCN (see :class:`LesionFCN`)."""
    return LesionFCN(**kwargs)
