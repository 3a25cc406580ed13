"""The 3D ResNet's evidence variant: a volume model that lesion masks teach
where findings are, so that its decision (and its Grad-CAM) rests on them.

A 3D ResNet that only sees volume labels learns a few-millimetre lesion
poorly from a few dozen volumes, and its Grad-CAM, read from a last stage
at 1/16 of the input size, cannot point inside such a lesion (README,
volume table).  This variant keeps MONAI's ResNet stages but reads them
back up to the input's resolution:

- MONAI's ``ResNet`` stem (3x3x3, stride 1, no max-pool) and its first three
  stages (basic blocks at full, 1/2 and 1/4 resolution);
- a top-down path (a small feature pyramid): the 1/4 stage, projected and
  upsampled, is added to the 1/2 stage, convolved, upsampled again and
  joined with the full-resolution stage by a last 3x3x3 convolution
  (``fuse``), whose receptive field spans about 31 voxels;
- a 1x1x1 *evidence head* turning ``fuse``'s map into one finding logit per
  voxel (:mod:`~napari_medcnn.models.evidence`);
- the volume decision: a linear layer on three numbers of that map (its
  smoothed maximum, the mean of its top voxels and its mean).

Because the decision is a function of the evidence map alone, Grad-CAM on
``fuse`` (the layer :func:`~napari_medcnn.saliency.base.find_target_layer`
picks) is, for the finding class, the evidence map itself up to a positive
factor: the explanation is the model's own reason.  Masks supervise the map
in the patch stage (:mod:`~napari_medcnn.training.slice_stage`, on 3D
patches of :attr:`EvidenceTrunk3D.patch` voxels); the linear head then
learns from whole volumes with the trunk frozen.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_medcnn.models.evidence import evidence_loss, evidence_summary

#: (depth, height, width) voxels of a training patch: about a third of a
#: 48 x 96 x 96 volume's depth and a quarter of its slice area
PATCH = (16, 48, 48)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(),
    )


class EvidenceTrunk3D(nn.Module):
    """MONAI ResNet stages + top-down path + 1x1x1 evidence head.

    ``forward`` returns the (B, 3) evidence summary; :meth:`evidence_map`
    the (B, 1, D, H, W) voxel logits at the input's size.  In training mode
    the last map is kept in :attr:`last_evidence` (B, D, H, W) for the
    lesion-mask loss.

    Args:
        in_channels: input channels.
        widths: channels of the three ResNet stages.
        top: channels of the top-down path and of ``fuse``.
    """

    #: what the patch stage trains on (see :mod:`.slice_stage`)
    pool = "evidence"
    patch = PATCH

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (8, 24, 48),
        top: int = 16,
    ):
        super().__init__()
        from monai.networks.nets import ResNet

        w1, w2, w3 = (int(w) for w in widths)
        net = ResNet(
            "basic", [1, 1, 1, 1], [w1, w2, w3, w3], spatial_dims=3,
            n_input_channels=in_channels, conv1_t_size=3, conv1_t_stride=1,
            no_max_pool=True, feed_forward=False, act=("relu", {"inplace": False}),
        )  # fmt: skip
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act)
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.lateral3 = nn.Conv3d(w3, w2, 1)
        self.lateral2 = nn.Conv3d(w2, w2, 1)
        self.smooth2 = _conv_bn_relu(w2, top)
        self.fuse = _conv_bn_relu(w1 + top, top)
        self.evidence_head = nn.Conv3d(top, 1, 1)
        self.last_evidence: torch.Tensor | None = None

    def evidence_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) volumes or patches -> (N, 1, D, H, W) logits."""
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        up3 = F.interpolate(
            self.lateral3(c3), size=c2.shape[2:], mode="trilinear", align_corners=False
        )
        p2 = self.smooth2(self.lateral2(c2) + up3)
        up2 = F.interpolate(
            p2, size=c1.shape[2:], mode="trilinear", align_corners=False
        )
        return self.evidence_head(self.fuse(torch.cat([c1, up2], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ev = self.evidence_map(x)
        self.last_evidence = ev[:, 0] if self.training else None
        return evidence_summary(ev)


class LesionResNet3D(nn.Module):
    """:class:`EvidenceTrunk3D` (``encoder``) + a linear head on its summary.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        widths, top: see :class:`EvidenceTrunk3D`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: tuple[int, int, int] = (8, 24, 48),
        top: int = 16,
    ):
        super().__init__()
        self.encoder = EvidenceTrunk3D(in_channels, tuple(widths), int(top))
        self.head = nn.Linear(3, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 3) evidence summary the head reads."""
        return self.encoder(x)

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from stored summaries (a frozen trunk's, computed once)."""
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def dense_loss(self, masks: torch.Tensor) -> torch.Tensor | None:
        """The lesion-mask loss of the last training forward pass (see
        :func:`~napari_medcnn.models.evidence.evidence_loss`)."""
        ev = self.encoder.last_evidence
        return None if ev is None else evidence_loss(ev, masks)
