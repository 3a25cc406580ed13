"""Domain guard and uncertainty (issue 12): rules, content and novelty."""

import numpy as np

from napari_medcnn.preprocessing.record import fov_record, prepare
from napari_medcnn.trust.domain import (
    DomainGuard,
    content_stats,
    is_colour,
    knn_novelty,
    slice_plane,
)
from napari_medcnn.trust.uncertainty import predictive_uncertainty


def _head(size=120, r=40):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2).astype(np.float32) * 100


def test_content_stats_tell_a_head_from_a_crop():
    rec = fov_record((96, 96))
    head = prepare([_head()], rec)[None]
    crop = prepare([np.random.default_rng(0).random((64, 64)) * 100], rec)[None]
    h, c = content_stats(head)[0], content_stats(crop)[0]
    assert h[0] > 0.9 and c[0] < 0.2


def test_rules_modality_colour_plane():
    guard = DomainGuard(
        {"modalities": ["MR"], "color": "grey",
         "orientation": {"plane": "axial", "max_oblique_deg": 30}}
    )  # fmt: skip
    assert guard.rule_reasons({"modality": "MR"}) == []
    assert "modality CT" in guard.rule_reasons({"modality": "CT"})[0]
    assert "colour" in guard.rule_reasons({}, colour=True)[0]
    sag = {"image_orientation_patient": [0, 1, 0, 0, 0, -1]}
    assert slice_plane(sag)[0] == "sagittal"
    assert "sagittal" in guard.rule_reasons(sag)[0]


def test_is_colour_ignores_grey_stored_as_rgb():
    g = np.random.default_rng(1).random((32, 32)) * 255
    assert not is_colour(np.stack([g, g, g], -1))
    assert is_colour(np.stack([g, 255 - g, g], -1))


def test_knn_novelty_and_assess():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(50, 8)) + 5
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    near = knn_novelty(ref[:3] * 3, ref, k=1)
    far = knn_novelty(-ref[:3], ref, k=1)
    assert np.all(near < 1e-4) and np.all(far > 1.0)
    guard = DomainGuard({"features": {"threshold": 0.5, "k": 1}}, ref)
    out = guard.assess(np.ones((2, 2)), np.vstack([ref[:1], -ref[:1]]))
    assert out[0]["in_domain"] and not out[1]["in_domain"]
    assert "unlike the training images" in out[1]["reasons"][0]


def test_uncertainty_range():
    u = predictive_uncertainty(np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]]))
    assert u[0] < 1e-6 and abs(u[1] - 1) < 1e-6 and 0 < u[2] < 1
