"""Near-duplicate groups by perceptual hashing, and splits that respect them.

Public image sets such as Br35H hold many near-duplicates (re-saved,
resized, mirrored copies).  A random split puts copies on both sides and
inflates test accuracy, so splits here keep each duplicate group whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def phash_codes(images: Sequence, mirror: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """64-bit DCT perceptual hashes of PIL images (and of their mirror images).

    Returns ``(codes, mirrored_codes)`` as uint64 arrays (mirrored is a copy of
    codes when ``mirror`` is False).
    """
    import imagehash
    from PIL import ImageOps

    def code(im) -> int:
        return int(str(imagehash.phash(im.convert("L"))), 16)

    codes = np.array([code(im) for im in images], dtype=np.uint64)
    if not mirror:
        return codes, codes.copy()
    mirrored = np.array([code(ImageOps.mirror(im)) for im in images], dtype=np.uint64)
    return codes, mirrored


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def duplicate_groups(
    codes: np.ndarray, mirrored: np.ndarray | None = None, max_distance: int = 8
) -> np.ndarray:
    """Group ids (N,) joining images whose hashes differ in <= ``max_distance``
    bits (a mirrored copy counts as a duplicate).  Single linkage."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(codes)
    adj = np.zeros((n, n), dtype=bool)
    for start in range(0, n, 512):  # rows in blocks bound memory at large n
        block = codes[start : start + 512, None]
        near = _popcount(block ^ codes[None, :]) <= max_distance
        if mirrored is not None:
            near |= _popcount(block ^ mirrored[None, :]) <= max_distance
        adj[start : start + 512] = near
    _, labels = connected_components(csr_matrix(adj), directed=False)
    return labels


def correlation_features(images: np.ndarray, size: int = 64) -> np.ndarray:
    """Zero-mean, unit-norm pixel vectors for :func:`confirmed_duplicate_groups`.

    Args:
        images: (N, H, W) prepared images of one size, e.g. the model
            inputs (block-averaged when H and W are multiples of ``size``,
            else resized with antialiasing).
        size: side of the block-averaged copy that is compared.

    Returns:
        ``(features, mirrored_features)``, each (N, size * size) float32.
    """
    x = np.asarray(images, dtype=np.float32)
    n, h, w = x.shape
    if h % size == 0 and w % size == 0:
        x = x.reshape(n, size, h // size, size, w // size).mean((2, 4))
    else:  # an antialiased resize (close to the block mean)
        from napari_medcnn.preprocessing.record import resize

        x = resize(x[:, None], [size, size])[:, 0]

    def unit(a: np.ndarray) -> np.ndarray:
        a = a.reshape(n, -1)
        a = a - a.mean(1, keepdims=True)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)

    return unit(x), unit(x[:, :, ::-1])


def confirmed_duplicate_groups(
    codes: np.ndarray,
    mirrored: np.ndarray,
    features: tuple[np.ndarray, np.ndarray],
    same_bits: int = 4,
    max_bits: int = 12,
    min_correlation: float = 0.9,
) -> np.ndarray:
    """Duplicate groups from two measures, to avoid single-linkage chaining.

    Two images are joined when their perceptual hashes (or one's mirror
    image) differ in at most ``same_bits`` bits, or when they differ in at
    most ``max_bits`` bits *and* their pixels correlate at
    ``min_correlation`` or more (Pearson, the better of plain and mirrored;
    ``features`` from :func:`correlation_features`).  Hash distance alone at
    a loose threshold chains different images into one group (on Br35H, 8
    bits joins tumour and non-tumour images); pixel correlation confirms
    that a loose pair is really the same picture re-saved, resized or
    mirrored.  Groups are the connected components (single linkage).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    f, fm = features
    n = len(codes)
    adj = np.zeros((n, n), dtype=bool)
    for start in range(0, n, 512):
        sl = slice(start, start + 512)
        bits = np.minimum(
            _popcount(codes[sl, None] ^ codes[None, :]),
            _popcount(codes[sl, None] ^ mirrored[None, :]),
        )
        corr = np.maximum(f[sl] @ f.T, f[sl] @ fm.T)
        adj[sl] = (bits <= same_bits) | ((bits <= max_bits) & (corr >= min_correlation))
    _, labels = connected_components(csr_matrix(adj), directed=False)
    return labels


def group_split(
    groups: np.ndarray,
    labels: np.ndarray,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> list[np.ndarray]:
    """Split item indices into parts (e.g. train/val/test) by whole groups.

    Groups are shuffled with ``seed`` and dealt, per majority class, so that
    each part gets about ``fractions`` of every class.  No group crosses
    parts.  Returns one sorted index array per fraction.
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in fractions]
    uniq = np.unique(groups)
    majority = {g: np.bincount(labels[groups == g]).argmax() for g in uniq}
    cum = np.cumsum(fractions) / np.sum(fractions)
    for cls in np.unique(labels):
        gs = [g for g in uniq if majority[g] == cls]
        rng.shuffle(gs)
        total = sum(int((groups == g).sum()) for g in gs)
        filled = 0
        for g in gs:
            members = np.flatnonzero(groups == g)
            # place the group where the running fraction falls
            pos = (filled + len(members) / 2.0) / max(total, 1)
            part = int(np.searchsorted(cum, pos))
            parts[min(part, len(parts) - 1)].extend(members.tolist())
            filled += len(members)
    return [np.array(sorted(p), dtype=np.int64) for p in parts]
