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


def test_content_rules_leave_the_novelty_threshold_a_budget():
    """Training images whose content differs from the validation set (as
    healthy slices at every level of a head differ from Br35H) must not make
    the content rules flag more than the budget: the kNN threshold would
    then sit at the validation maximum and never flag anything new."""
    from napari_medcnn.trust.domain import fit_domain, knn_novelty, normalise_reference

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]

    def discs(radii):
        out = np.zeros((len(radii), 1, 32, 32), np.float32)
        for i, r in enumerate(radii):
            out[i, 0] = (np.hypot(yy - 15.5, xx - 15.5) < r).astype(np.float32)
        return out + rng.normal(0, 0.01, out.shape).astype(np.float32)

    train_x = discs(rng.uniform(9.0, 10.0, 400))  # narrow content
    val_x = discs(rng.uniform(7.0, 12.0, 200))  # wider: many outside
    train_f = rng.normal(size=(400, 8))
    val_f = rng.normal(size=(200, 8))
    domain, reference = fit_domain(train_x, train_f, val_x, val_f, modalities=["MR"])
    feats = domain["features"]
    assert feats["validation_flagged"] <= 0.05
    val_score = knn_novelty(val_f, normalise_reference(train_f), feats["k"])
    assert feats["threshold"] < val_score.max()  # novelty still flags some
    assert (val_score > feats["threshold"]).mean() >= 0.05 / 4
