"""The seed CNN: conv 32 -> pool -> conv 64 -> pool -> conv 128 -> pool ->
dense 512 -> classes, ported to PyTorch with optional BatchNorm and dropout.

The classic design flattens a fixed-size feature map into the dense layer; an
adaptive average pool to ``pooled_size`` before the flatten keeps that design
while accepting any input size (the card still records the trained size).
The forward pass returns logits; softmax is applied by inference.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from napari_medcnn.models.layers import adaptive_avgpool, batchnorm, conv, maxpool
from napari_medcnn.models.registry import register


class SeedCNN(nn.Module):
    """Three conv blocks and a 512-unit dense head.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: input channels (modalities).
        num_classes: output classes.
        batchnorm: BatchNorm after each convolution.
        dropout: dropout probability before the last layer (0 disables).
        widths: channels of the conv blocks (one block each, then a 2x
            max-pool); three in the seed design, any number allowed.
        pooled_size: side of the adaptive pool before the dense layer.
        convs_per_block: 3x3 convolutions per block (VGG style, 1 in the
            seed design).
        head: ``"dense"`` (the seed's flatten -> 512 -> classes) or
            ``"gap"`` (global average pool -> dropout -> classes: fewer
            weights, and the last block's map stays a class-activation map).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        batchnorm: bool = True,
        dropout: float = 0.5,
        widths: tuple[int, ...] = (32, 64, 128),
        pooled_size: int = 4,
        convs_per_block: int = 1,
        head: str = "dense",
    ):
        super().__init__()
        Conv, Pool = conv(spatial_dims), maxpool(spatial_dims)
        Norm = _norm_factory(spatial_dims, batchnorm)
        blocks: list[nn.Module] = []
        prev = in_channels
        if head not in ("dense", "gap"):
            raise ValueError(f"head must be 'dense' or 'gap', not {head!r}")
        for w in widths:
            for _ in range(max(1, int(convs_per_block))):
                blocks += [
                    Conv(prev, w, kernel_size=3, padding=1, bias=not batchnorm),
                    Norm(w),
                    nn.ReLU(),
                ]
                prev = w
            blocks.append(Pool(2))
        self.features = nn.Sequential(*blocks)
        drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if head == "gap":
            self.pool = adaptive_avgpool(spatial_dims)(1)
            self.head = nn.Sequential(nn.Flatten(), drop, nn.Linear(prev, num_classes))
            self.feature_dim = prev
        else:
            self.pool = adaptive_avgpool(spatial_dims)(pooled_size)
            flat = prev * pooled_size**spatial_dims
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(flat, 512),
                nn.ReLU(),
                drop,
                nn.Linear(512, num_classes),
            )
            self.feature_dim = 512

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (B, ``feature_dim``)."""
        h = self.pool(self.features(x))
        for layer in list(self.head)[:-1]:
            h = layer(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _norm_factory(spatial_dims: int, enabled: bool):
    if enabled:
        return batchnorm(spatial_dims)
    return lambda _channels: nn.Identity()


@register("seed_cnn")
def seed_cnn(**kwargs) -> nn.Module:
    """The seed CNN (see :class:`SeedCNN` for arguments)."""
    return SeedCNN(**kwargs)
