"""Explaining a volume decision (issue 14), on tiny models trained here.

Synthetic volumes: 10 slices of 32 x 32 noise, each with a bright square
in 2 random slices (both classes: a distractor the decision must not rest
on); class ``lesion`` adds a Gaussian blob over 2-4 consecutive slices.
A CNN+RNN (seed-CNN encoder, GRU, attention) is trained on them with
``training.trainer.fit``, a ResNet-10 3D on volumes with a bright cube.

Checked with real numbers: the argmax of each slice-importance method
falls in the blob's slice range on held-out lesion volumes; deleting
slices in importance order beats random orders; the classify record
carries the importance; 3D Grad-CAM, mapped back through a depth and
in-plane resize, peaks inside the cube.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from napari_medcnn._progress import drain
from napari_medcnn.inference.predict import classify
from napari_medcnn.inference.records import classification_record, to_csv
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import LoadedModel, save_checkpoint
from napari_medcnn.saliency import explain
from napari_medcnn.saliency.metrics import slice_deletion_insertion
from napari_medcnn.saliency.slices import (
    SliceScorer,
    classify_slice_importance,
    fill_slices,
    iter_slice_importance,
    normalize_importance,
    slice_importance,
)
from napari_medcnn.training.trainer import TrainConfig, fit

S, SIDE = 10, 32
PLAIN = {"intensity": {"mode": "none"}, "foreground_crop": None}
ENCODER = {"widths": [8, 16], "pooled_size": 2, "dropout": 0.0, "head": "gap"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and leave a core free)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lesion_volumes(n: int, rng: np.random.Generator):
    """(x (n, 1, S, 32, 32) in [0, 1], labels (n,), blob slice ranges (n, 2));
    the second half are lesions (range ``[a, b)``, else ``-1``)."""
    x = rng.random((n, 1, S, SIDE, SIDE), dtype=np.float32) * 0.6
    y = np.zeros(n, np.int64)
    y[n // 2 :] = 1
    ranges = np.full((n, 2), -1)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    for i in range(n):
        ks = rng.choice(S, 2, replace=False)  # the distractor, both classes
        cy, cx = rng.integers(2, SIDE - 8, 2)
        x[i, 0, ks, cy : cy + 6, cx : cx + 6] += 0.8
    for i in range(n // 2, n):
        length = int(rng.integers(2, 5))
        a = int(rng.integers(0, S - length + 1))
        cy, cx = rng.integers(8, SIDE - 8, 2)
        blob = 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
        x[i, 0, a : a + length] += blob
        ranges[i] = a, a + length
    return np.clip(x, 0, 1), y, ranges


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    return {
        "train": lesion_volumes(160, rng),
        "val": lesion_volumes(40, rng),
        "test": lesion_volumes(60, rng),
    }


@pytest.fixture(scope="module")
def rnn(data):
    torch.manual_seed(2)
    model = build_model(
        "cnn_rnn", in_channels=1, num_classes=2, encoder="seed_cnn",
        encoder_kwargs=ENCODER, hidden_size=16,
    )  # fmt: skip
    (xt, yt, _), (xv, yv, _) = data["train"], data["val"]
    cfg = TrainConfig(
        epochs=10, batch_size=16, lr=5e-3, augment=None, patience=0, seed=2,
        device="cpu",
    )  # fmt: skip
    result = drain(fit(model, (xt, yt), (xv, yv), cfg))
    return result.model.eval()


def _hit_rate(model, data, method, **options) -> float:
    x, y, ranges = data["test"]
    hits = []
    for i in np.flatnonzero(y == 1):
        imp = slice_importance(model, x[i], 1, method, **options)
        a, b = ranges[i]
        hits.append(a <= int(np.argmax(imp)) < b)
    return float(np.mean(hits))


def test_the_model_learned_the_lesion(rnn, data):
    x, y, _ = data["test"]
    with torch.no_grad():
        acc = (rnn(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc >= 0.85, acc


@pytest.mark.parametrize(
    ("method", "options", "least"),
    [
        ("occlusion", {}, 0.9),  # the default: minimum fill, one slice
        ("attention", {}, 0.85),
        ("gradient", {}, 0.85),
        ("occlusion", {"window": 3}, 0.8),
    ],
)
def test_slice_importance_points_at_the_lesion_slices(
    rnn, data, method, options, least
):
    rate = _hit_rate(rnn, data, method, **options)
    assert rate >= least, (method, options, rate)


def test_interpolated_fill_misses_lesions_that_span_slices(rnn, data):
    """Why the default fill is the minimum: a blob over several slices is
    restored by its neighbours' interpolation, so occluding one of its
    slices barely matters."""
    interp = _hit_rate(rnn, data, "occlusion", fill="interpolate")
    assert interp < _hit_rate(rnn, data, "occlusion") - 0.2


def test_importance_is_normalised_and_reports_progress(rnn, data):
    x, _y, ranges = data["test"]
    i = len(x) - 1
    events = []
    gen = iter_slice_importance(rnn, x[i], None, batch_size=4)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        res = stop.value
    assert res.method == "occlusion" and res.target == 1
    assert res.params == {"fill": "minimum", "window": 1, "feature_reuse": True}
    assert res.importance.shape == (S,) and res.importance.dtype == np.float32
    assert res.importance.sum() == pytest.approx(1.0, abs=1e-5)
    assert (res.importance >= 0).all()
    # raw: the probability drop; the biggest one is in the blob
    assert 0 < res.raw.max() <= res.probability <= 1
    assert ranges[i][0] <= int(np.argmax(res.raw)) < ranges[i][1]
    steps = [e for e in events if e[1:] != (0, 1) and e[1:] != (1, 1)]
    assert steps[-1] == ("slices", S, S) and len(steps) == 1 + -(-S // 4)
    attn = drain(iter_slice_importance(rnn, x[i], None, "attention")).raw
    assert attn.sum() == pytest.approx(1.0, abs=1e-5)
    assert normalize_importance(np.array([-1.0, 0.0, 3.0, 1.0])).tolist() == [
        0.0, 0.0, 0.75, 0.25,
    ]  # fmt: skip
    assert not normalize_importance(np.array([-1.0, 0.0])).any()


def test_feature_reuse_equals_whole_volume_passes(rnn, data):
    """The shortcut (slices encoded once) gives the logits of whole occluded
    volumes, for CNN+RNN and slice_pool, both fills; the model is unchanged."""
    torch.manual_seed(0)
    pool = build_model("slice_pool", encoder_kwargs=ENCODER).eval()
    x = data["test"][0][-1]
    masks = np.zeros((4, S), bool)
    masks[1, 3] = masks[2, :2] = masks[3, [0, 4, 5, 9]] = True
    for model in (rnn, pool):
        modules = dict(model.named_modules())
        for fill in ("minimum", "interpolate"):
            sc = SliceScorer(model, x, fill)
            assert sc.fast
            xt = torch.from_numpy(x)[None]
            whole = torch.cat([fill_slices(xt, m, fill) for m in masks])
            with torch.no_grad():
                want = model(whole).numpy()
            np.testing.assert_allclose(sc.logits(masks), want, atol=1e-4, rtol=1e-4)
        assert dict(model.named_modules()) == modules
    # interpolation: halfway between the kept neighbours; ends copy theirs
    vol = torch.arange(5, dtype=torch.float32).reshape(1, 1, 5, 1, 1) * 2
    out = fill_slices(vol, np.array([1, 1, 0, 1, 0], bool), "interpolate").ravel()
    assert out.tolist() == [4.0, 4.0, 4.0, 6.0, 8.0]
    low = fill_slices(vol, np.array([0, 1, 0, 0, 0], bool)).ravel()
    assert low.tolist() == [0.0, 0.0, 4.0, 6.0, 8.0]


def test_deleting_important_slices_first_beats_random_orders(rnn, data):
    x, y, _ = data["test"]
    lesions = np.flatnonzero(y == 1)[:12]
    beats, fractions = [], []
    for i in lesions:
        imp = slice_importance(rnn, x[i], 1)
        m = slice_deletion_insertion(rnn, x[i], imp, 1, n_random=6)
        assert len(m["deletion_curve"]) == S + 1 and m["steps"] == S
        assert m["deletion_curve"][0] == pytest.approx(m["insertion_curve"][-1])
        beats.append(m["deletion_auc"] < m["deletion_auc_random"])
        fractions.append(m["deletion_beats_random_fraction"])
        assert (m["trust_checks"]["deletion"] == "passed") == beats[-1]
    assert np.mean(beats) >= 0.9, beats
    assert np.mean(fractions) >= 0.85, fractions
    # a reversed (least important first) order loses to random, and says so
    imp = slice_importance(rnn, x[lesions[0]], 1)
    worst = slice_deletion_insertion(rnn, x[lesions[0]], -imp, 1, n_random=6)
    assert worst["deletion_auc"] > worst["deletion_auc_random"]
    assert any("deleting the most important slices" in w for w in worst["warnings"])


def _sequence_card(size=(SIDE, SIDE)):
    return ModelCard(
        arch="cnn_rnn",
        arch_kwargs={
            "in_channels": 1, "num_classes": 2, "encoder": "seed_cnn",
            "encoder_kwargs": ENCODER, "hidden_size": 16,
        },
        classes=["normal", "lesion"], spatial_dims=3, in_channels=1,
        input_size=list(size), input_kind="sequence",
        preprocessing={**PLAIN, "size": list(size)},
    )  # fmt: skip


def test_classify_record_carries_slice_importance(rnn, data, tmp_path):
    path = save_checkpoint(rnn, _sequence_card(), tmp_path / "seq")
    x, _y, ranges = data["test"]
    i = len(x) - 2
    vol = x[i, 0]
    res = drain(
        classify(
            [vol],
            path,
            scope="volume",
            device="cpu",
            slice_importance=classify_slice_importance,
        )  # fmt: skip
    )
    assert res.label == "lesion" and res.slice_importance_method == "occlusion"
    rec = classification_record(res, name="vol")
    imp = rec["slice_importance"]
    assert len(imp) == S == rec["n_slices"]
    assert sum(imp) == pytest.approx(1.0, abs=1e-4)
    assert ranges[i][0] <= int(np.argmax(imp)) < ranges[i][1]
    assert rec["slice_importance_method"] == "occlusion"
    row = next(csv.DictReader(io.StringIO(to_csv([rec]))))
    assert json.loads(row["slice_importance"]) == imp
    assert row["slice_importance_method"] == "occlusion"
    plain = drain(classify([vol], path, scope="volume", device="cpu"))
    assert plain.slice_importance is None
    assert "slice_importance" not in classification_record(plain)


# --- 3D Grad-CAM --------------------------------------------------------------

#: the 3D model's input: 16 slices of 32 x 32; scans: 12 slices of 40 x 40
INPUT_3D, SCAN_3D = (16, 32, 32), (12, 40, 40)


def _cube_volumes(n, shape, cube, rng):
    """Noise volumes, half with a bright cube of ``cube`` voxels: (x, y,
    cube corners)."""
    x = rng.random((n, 1, *shape), dtype=np.float32) * 0.6
    y = np.zeros(n, np.int64)
    y[n // 2 :] = 1
    corners = []
    for i in range(n):
        c = [int(rng.integers(0, s - k + 1)) for s, k in zip(shape, cube)]
        corners.append(c)
        if y[i]:
            box = tuple(slice(a, a + k) for a, k in zip(c, cube))
            x[(i, 0, *box)] += 0.4
    return np.clip(x, 0, 1), y, corners


@pytest.fixture(scope="module")
def resnet3d():
    """A ResNet-10 3D trained on 16 x 32 x 32 cube volumes (no card)."""
    rng = np.random.default_rng(0)
    train = _cube_volumes(64, INPUT_3D, (4, 8, 8), rng)
    val = _cube_volumes(16, INPUT_3D, (4, 8, 8), rng)
    torch.manual_seed(0)
    model = build_model(
        "resnet", spatial_dims=3, in_channels=1, num_classes=2,
        block_inplanes=(8, 16, 32, 64), conv1_t_stride=1,
    )  # fmt: skip
    cfg = TrainConfig(
        epochs=6, batch_size=8, lr=3e-3, augment=None, patience=0, device="cpu"
    )
    return drain(fit(model, train[:2], val[:2], cfg)).model.eval()


def _records():
    from napari_medcnn.preprocessing.volume import volume_record

    vol = volume_record(INPUT_3D[0], INPUT_3D[1:], base=PLAIN, crop_depth=False)
    return {"volume": vol, "plain": {**PLAIN, "size": list(INPUT_3D)}}


@pytest.mark.parametrize("record", ["volume", "plain"])
def test_3d_gradcam_maps_back_onto_the_scan_and_peaks_in_the_cube(resnet3d, record):
    """Scans of 12 x 40 x 40 are resized to the model's 16 x 32 x 32 (the
    slice count too: a volume record's slice resampling, or a plain 3D
    size); the map comes back at the scan's shape, and the centre of its
    peak lies in the cube (3 slices, 10 x 10 px)."""
    card = ModelCard(
        arch="resnet", arch_kwargs={}, classes=["normal", "lesion"],
        spatial_dims=3, in_channels=1, input_size=list(INPUT_3D),
        input_kind="volume", preprocessing=_records()[record],
    )  # fmt: skip
    loaded = LoadedModel(resnet3d, card, torch.device("cpu"), "")
    rng = np.random.default_rng(5)
    x, y, corners = _cube_volumes(16, SCAN_3D, (3, 10, 10), rng)
    hits: dict[str, list[bool]] = {"auto": [], "last": []}
    layers = set()
    for i in np.flatnonzero(y == 1):
        for layer in hits:
            res = drain(
                explain([x[i, 0]], loaded, "gradcam", target=1, spacing=(3, 1, 1),
                        layer=None if layer == "auto" else layer)
            )  # fmt: skip
            assert res.map.shape == SCAN_3D and res.scope == "volume"
            if layer == "auto":
                layers.add(res.params["layer"])
            peak = np.floor(np.argwhere(res.map >= 0.999 * res.map.max()).mean(0))
            cube = zip(peak, corners[i], (3, 10, 10))
            hits[layer].append(all(c <= p < c + k for p, c, k in cube))
    # the automatic stage: 16 x 16 in-plane (layer1), not the 1 x 2 x 2 layer4
    assert layers == {"layer1"}
    assert np.mean(hits["auto"]) >= 0.75, hits
    # classic Grad-CAM on the last feature map is too coarse to point
    assert np.mean(hits["last"]) <= 0.25, hits
    assert res.params["map_resolution"] == [1, 2, 2]


def test_sequence_model_with_a_volume_record(rnn, data, tmp_path):
    """A volume record reads the scan along its coronal axis and resamples
    14 slices to 8: the CNN+RNN's per-slice Grad-CAM comes back at the
    scan's shape, and explain's and classify's per-slice values have one
    value per slice of the scan along the record's (coronal) slice axis."""
    from napari_medcnn.preprocessing.volume import volume_record

    record = volume_record(8, (SIDE, SIDE), base=PLAIN, slice_axis="coronal",
                           crop_depth=False)  # fmt: skip
    card = _sequence_card()
    card.preprocessing = record
    path = save_checkpoint(rnn, card, tmp_path / "seqvol")
    scan = np.random.default_rng(4).random((20, 14, 30)).astype(np.float32)
    res = drain(explain([scan], path, "gradcam", spacing=(2.0, 1.0, 1.0)))
    assert res.map.shape == scan.shape and res.map.max() == 1.0
    assert res.slice_importance.shape == (14,)  # per coronal scan slice
    out = drain(
        classify([scan], path, scope="volume", spacing=(2.0, 1.0, 1.0),
                 device="cpu", slice_importance=classify_slice_importance)
    )  # fmt: skip
    assert out.slice_probabilities.shape == (14, 2)  # coronal: axis 1
    assert out.slice_importance.shape == (14,)
    assert abs(float(out.slice_importance.sum()) - 1.0) < 1e-5
    # the Saliency panel's curve is the Classify panel's
    if res.target == int(np.argmax(out.probabilities)):
        np.testing.assert_allclose(
            res.slice_importance, out.slice_importance, atol=1e-4
        )
