"""Duplicate groups: copies are joined, different images are not chained."""

from __future__ import annotations

import numpy as np
from PIL import Image

from napari_medcnn.training.data.dedup import (
    confirmed_duplicate_groups,
    correlation_features,
    duplicate_groups,
    group_split,
    phash_codes,
)


def _scenes(n: int, seed: int = 0) -> list[np.ndarray]:
    """n different smooth 128x128 'scans' (random blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    out = []
    for _ in range(n):
        img = np.zeros((128, 128))
        for _ in range(6):
            cy, cx = rng.uniform(20, 108, 2)
            r = rng.uniform(6, 25)
            img += rng.uniform(0.3, 1) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
            )
        out.append(img / img.max())
    return out


def test_copies_join_and_different_images_stay_apart():
    base = _scenes(12)
    rng = np.random.default_rng(1)
    images = list(base)
    # a re-saved copy (noise), a mirrored copy and a slightly brighter copy
    images.append(np.clip(base[0] + rng.normal(0, 0.01, base[0].shape), 0, 1))
    images.append(base[1][:, ::-1])
    images.append(np.clip(base[2] * 1.1, 0, 1))
    copy_of = {12: 0, 13: 1, 14: 2}
    pil = [Image.fromarray((im * 255).astype(np.uint8)) for im in images]
    codes, mirrored = phash_codes(pil)
    groups = confirmed_duplicate_groups(
        codes, mirrored, correlation_features(np.stack(images))
    )
    for copy, orig in copy_of.items():
        assert groups[copy] == groups[orig]
    originals = groups[:12]
    assert len(set(originals.tolist())) == 12  # no two different scenes chained
    # the split keeps every group whole
    labels = np.arange(len(images)) % 2
    parts = group_split(groups, labels, (0.5, 0.5), seed=0)
    for a, b in ((0, 12), (1, 13), (2, 14)):
        assert sum(a in p and b in p for p in parts) == 1


def test_correlation_confirms_loose_hash_pairs_only():
    # two unrelated images whose hashes are within the loose bound are not
    # joined unless their pixels correlate
    codes = np.array([0b1111, 0b0000], dtype=np.uint64)  # 4 bits apart
    a, b = _scenes(2, seed=3)
    feats = correlation_features(np.stack([a, b]))
    assert len(set(duplicate_groups(codes, codes, 4).tolist())) == 1
    loose = confirmed_duplicate_groups(codes, codes, feats, same_bits=2, max_bits=12)
    assert len(set(loose.tolist())) == 2
    feats_same = correlation_features(np.stack([a, a]))
    joined = confirmed_duplicate_groups(codes, codes, feats_same, same_bits=2)
    assert len(set(joined.tolist())) == 1
