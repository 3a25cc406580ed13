"""Evidence maps: a dense per-pixel (or per-voxel) finding logit that lesion
masks supervise, and the few numbers a decision reads from it.

Used by the CNN+RNN / slice-pool evidence encoder (2D maps, one per slice,
:class:`~napari_medcnn.models.cnn_rnn.SliceEncoder`) and by the 3D ResNet's
evidence variant (one 3D map per volume,
:class:`~napari_medcnn.models.lesion_resnet3d.LesionResNet3D`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: pixels (voxels) averaged for the "top" evidence summary
EVIDENCE_TOP = 16


def smooth(ev: torch.Tensor) -> torch.Tensor:
    """3x3 (3x3x3 for a (N, C, D, H, W) map) box mean, same size: a peak
    needs a small blob behind it, not one pixel."""
    pool = F.avg_pool3d if ev.ndim == 5 else F.avg_pool2d
    return pool(ev, 3, 1, 1, count_include_pad=False)


def evidence_summary(ev: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) or (N, 1, d, h, w) evidence logits -> (N, 3)
    probabilities: the maximum of the smoothed map (:func:`smooth`), the
    mean of its top :data:`EVIDENCE_TOP` pixels, and the mean over the map.
    Probabilities stay in [0, 1] however sure the map is, so what reads them
    (an RNN's gates, a linear head) does not saturate on large logits."""
    p = torch.sigmoid(smooth(ev)).flatten(1)
    top = p.topk(min(EVIDENCE_TOP, p.shape[1]), dim=1).values
    return torch.stack([p.amax(1), top.mean(1), p.mean(1)], dim=1)


def evidence_loss(evidence: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Class-balanced pixel-wise BCE of evidence logits (B, S, h, w) against
    lesion masks (B, S, H, W) in [0, 1].

    Lesions are a tiny share of a volume's pixels (often under 0.1 %), so the
    lesion pixels and the other pixels are averaged separately and the two
    means added: the lesion's few pixels weigh as much as the rest.  NaN
    marks a volume (or pixel) without a known mask, which does not count.
    Masks are resized in-plane to the map by area (a pixel's target is the
    lesion fraction it covers); a 3D map (B, D, H, W) is at the volume's
    full resolution.  Zero when nothing is known."""
    b, s, h, w = evidence.shape
    m = masks.to(evidence.dtype)
    if m.shape[-2:] != (h, w):
        m = F.adaptive_avg_pool2d(m.reshape(b * s, 1, *m.shape[-2:]), (h, w))
        m = m.reshape(b, s, h, w)
    known = torch.isfinite(m)
    if not bool(known.any()):
        return evidence.sum() * 0.0
    t = torch.where(known, m, torch.zeros_like(m))
    neg = torch.where(known, 1.0 - t, torch.zeros_like(t))
    loss = (neg * F.softplus(evidence)).sum() / neg.sum().clamp(min=1.0)
    if bool((t > 0).any()):
        loss = loss + (t * F.softplus(-evidence)).sum() / t.sum()
    return loss
