"""Region labels: patch sampling, the patch classifier's probability map
(Dice >= 0.8 on two synthetic textures), and bad-input messages."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_medcnn._progress import drain
from napari_medcnn.training.data.splits import NotEnoughLabels
from napari_medcnn.training.labels.regions import (
    patch_pixels,
    probability_map,
    sample_patches,
    train_patch_classifier,
)
from napari_medcnn.training.trainer import TrainConfig


def two_textures(size: int = 96, seed: int = 0):
    """Fine-grained noise outside a blob, coarse blobs inside; both with the
    same mean and spread, so only texture tells them apart."""
    rng = np.random.default_rng(seed)
    fine = rng.normal(size=(size, size))
    coarse = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
    coarse = coarse / coarse.std()
    yy, xx = np.mgrid[:size, :size]
    truth = ((yy - 0.55 * size) ** 2 + (xx - 0.45 * size) ** 2) < (0.28 * size) ** 2
    image = np.where(truth, coarse, fine) * 40 + 100
    return image.astype(np.float32), truth


def scribbles(truth: np.ndarray) -> np.ndarray:
    """What a user paints: a few strokes well inside each region."""
    inside = ndimage.binary_erosion(truth, iterations=8)
    outside = ndimage.binary_erosion(~truth, iterations=8)
    labels = np.zeros(truth.shape, np.uint8)
    stripes = np.zeros(truth.shape, bool)
    stripes[::9] = True
    stripes[:, ::9] = True
    labels[inside & stripes] = 2
    labels[outside & stripes] = 1
    return labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core machine: no oversubscription
    yield
    torch.set_num_threads(n)


def test_probability_map_dice_on_two_textures(tmp_path, one_thread):
    image, truth = two_textures()
    labels = scribbles(truth)
    scale = (0.5, 0.5)  # mm per pixel: a 6 mm patch is 12 px
    patches = sample_patches(
        image,
        labels,
        scale,
        6.0,
        class_names={1: "fine", 2: "coarse"},
        max_per_class=128,
    )
    assert patches.patch_px == (12, 12) and patches.x.shape[1:] == (1, 12, 12)
    assert np.bincount(patches.y).tolist() == [128, 128]  # balanced
    cfg = TrainConfig(
        epochs=8, batch_size=32, lr=3e-3, device="cpu", patience=0, augment=None
    )
    res = drain(
        train_patch_classifier(patches, out=tmp_path / "patch", config=cfg, kfold=None)
    )
    assert res.card.provenance["label_values"] == [1, 2]
    events = []
    gen = probability_map(image, res.checkpoint, stride=3, batch_size=512)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            pm = stop.value
            break
    assert events[0] == ("probability_map", 0, events[-1][2])
    assert pm.probs.shape == (2, *image.shape)
    assert np.allclose(pm.probs.sum(0), 1, atol=1e-4)
    seg = pm.label_image()
    d = dice(seg == 2, truth)
    print(f"Dice {d:.3f}")
    assert d >= 0.8
    assert pm.classes == ["fine", "coarse"]


def test_3d_patches_and_2d_patches_of_a_volume():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(10, 24, 24)).astype(np.float32)
    lab = np.zeros(vol.shape, np.uint8)
    lab[5, 6:9, 6:9] = 1
    lab[5, 15:18, 15:18] = 2
    p2 = sample_patches(vol, lab, (2.0, 1.0, 1.0), 8.0)
    assert p2.patch_px == (1, 8, 8) and p2.x.shape[1:] == (1, 8, 8)
    p3 = sample_patches(vol, lab, (2.0, 1.0, 1.0), 8.0, patch_dims=3)
    assert p3.patch_px == (4, 8, 8) and p3.x.shape[1:] == (1, 4, 8, 8)
    centre = p3.centers[0]
    from napari_medcnn.training.labels.regions import normalize_image

    norm = normalize_image(vol)[
        centre[0] - 2 : centre[0] + 2,
        centre[1] - 4 : centre[1] + 4,
        centre[2] - 4 : centre[2] + 4,
    ]
    assert np.allclose(p3.x[0, 0], norm)  # the patch is centred on the pixel


def test_region_bad_input_messages():
    image = np.zeros((32, 40), np.float32)
    with pytest.raises(ValueError, match=r"shape \(32, 41\) but the image"):
        sample_patches(image, np.zeros((32, 41), np.uint8))
    one = np.zeros((32, 40), np.uint8)
    one[5, 5] = 1
    with pytest.raises(NotEnoughLabels, match="at least 2 label values"):
        sample_patches(image, one)
    with pytest.raises(ValueError, match="at most 16 mm"):
        patch_pixels(20.0, (0.5, 0.5), (32, 40))
    with pytest.raises(ValueError, match="patch_dims"):
        patch_pixels(4.0, None, (32, 40), patch_dims=3)
