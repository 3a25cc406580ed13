"""Healthy slices at every level of a head, as extra "no finding" examples.

Br35H's normal images are mostly slices through the lateral ventricles, so
a model trained on them alone has never seen the skull base or the vertex
of a healthy head, and calls them tumour.  :func:`healthy_slices` re-slices
a healthy head volume (Colin27, shipped with the plugin) axially at small
random tilts and fields of view, and prepares every slice that shows the
head, so training covers all levels with the label "no tumour".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def tilted(volume: np.ndarray, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """``volume`` (S, H, W; isotropic voxels) rotated about its centre by
    ``pitch_deg`` (about the W axis: slices tilt front-to-back) and
    ``roll_deg`` (about the H axis), linear interpolation, 0 outside."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xy", [pitch_deg, roll_deg], degrees=True).as_matrix()
    # axes (S, H, W) ~ (z, y, x): rotate about x (W) then y (H)
    m = rot[::-1, ::-1]
    centre = (np.asarray(volume.shape) - 1) / 2.0
    offset = centre - m @ centre
    return ndimage.affine_transform(
        volume.astype(np.float32), m, offset=offset, order=1, cval=0.0
    )


def head_slices(volume: np.ndarray, min_fraction: float = 0.03) -> np.ndarray:
    """Indices of the slices of (S, H, W) ``volume`` whose head (values above
    10 % of the volume's 99th percentile) covers at least ``min_fraction``
    of the slice."""
    hi = float(np.percentile(volume, 99))
    frac = (volume > 0.1 * hi).mean(axis=(1, 2))
    return np.flatnonzero(frac >= min_fraction)


def healthy_slices(
    volume: np.ndarray,
    spacing: Sequence[float],
    record: dict[str, Any],
    copies: int = 3,
    max_tilt_deg: float = 12.0,
    max_margin: float = 0.25,
    seed: int = 0,
) -> np.ndarray:
    """Prepared axial slices of a healthy head at every level.

    Args:
        volume: (S, H, W) head, axial slices on axis 0, isotropic voxels.
        spacing: its voxel size in mm (used for the in-plane squaring).
        record: the model's preprocessing record.
        copies: re-slicings; the first is untilted, the others at random
            pitch and roll within ``max_tilt_deg`` degrees.
        max_margin: each slice is padded by a random margin of up to this
            fraction of its side (the field of view varies between scans).
        seed: numpy seed.

    Returns:
        float32 (N, 1, *record["size"]) model inputs, all "no tumour".
    """
    from napari_medcnn.preprocessing.record import prepare

    rng = np.random.default_rng(seed)
    inplane = tuple(float(s) for s in spacing[-2:])
    out = []
    for c in range(copies):
        if c == 0:
            vol = np.asarray(volume, np.float32)
        else:
            pitch, roll = rng.uniform(-max_tilt_deg, max_tilt_deg, 2)
            vol = tilted(volume, pitch, roll * 0.5)
        for k in head_slices(vol):
            s = vol[k]
            m = rng.uniform(0, max_margin, 4) * np.array(s.shape * 2)
            pads = ((int(m[0]), int(m[1])), (int(m[2]), int(m[3])))
            out.append(prepare([np.pad(s, pads)], record, inplane))
    return np.stack(out).astype(np.float32)
