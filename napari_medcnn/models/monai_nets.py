"""ResNet and DenseNet from MONAI's networks, in 2D or 3D.

Thin factories that map the zoo's common arguments (``spatial_dims``,
``in_channels``, ``num_classes``) onto MONAI's constructors, with small
default widths that train on a CPU.  In-place ReLU is switched off so that
gradient-based saliency (backward hooks) works on these models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from napari_medcnn.models.registry import register

_ACT = ("relu", {"inplace": False})


@register("resnet")
def resnet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    layers: Sequence[int] = (1, 1, 1, 1),
    block_inplanes: Sequence[int] = (32, 64, 128, 256),
    block: str = "basic",
    conv1_t_stride: int = 2,
    evidence: bool = False,
) -> nn.Module:
    """MONAI ResNet; ``layers=(1,1,1,1)`` is a ResNet-10, ``(2,2,2,2)`` a -18.

    ``evidence=True`` (3D only): the lesion-mask variant,
    :class:`~napari_medcnn.models.lesion_resnet3d.LesionResNet3D` (MONAI's
    stages at full, 1/2 and 1/4 resolution with a top-down path and a
    voxel evidence head); ``layers``, ``block`` and ``conv1_t_stride`` do
    not apply, and the first three ``block_inplanes`` are its widths.
    """
    if evidence:
        from napari_medcnn.models.lesion_resnet3d import LesionResNet3D

        if spatial_dims != 3:
            raise ValueError("the evidence ResNet reads volumes (spatial_dims=3)")
        return LesionResNet3D(in_channels, num_classes, tuple(block_inplanes[:3]))
    from monai.networks.nets import ResNet

    return ResNet(
        block=block,
        layers=list(layers),
        block_inplanes=list(block_inplanes),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        num_classes=num_classes,
        conv1_t_stride=conv1_t_stride,
        act=_ACT,
    )


@register("densenet")
def densenet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    init_features: int = 32,
    growth_rate: int = 16,
    block_config: Sequence[int] = (4, 8, 8),
    dropout_prob: float = 0.0,
) -> nn.Module:
    """MONAI DenseNet; the defaults are a small CPU-friendly variant.

    ``block_config=(6, 12, 24, 16)`` with 64/32 features is DenseNet-121.
    """
    from monai.networks.nets import DenseNet

    return DenseNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        init_features=init_features,
        growth_rate=growth_rate,
        block_config=tuple(block_config),
        dropout_prob=dropout_prob,
        act=_ACT,
    )
