"""The fast inference path behind :func:`napari_medcnn.inference.predict.classify`.

* :func:`optimized_model`: a fused inference copy of a loaded model (see
  :mod:`napari_medcnn.models.fuse`; on CPU, a 2D slice model's copy is then
  traced and frozen with TorchScript), cached beside the model and checked
  against it;
* :func:`per_slice_logits`: every slice of a volume, batch by batch, prepared
  with :func:`~napari_medcnn.preprocessing.batch.prepare_slices`; on CPU in
  worker threads that each prepare and run whole batches on one core, on a
  GPU with the next batches prepared by all the CPU threads, a few slices
  each, while the device runs this one.

Pure core: no Qt.  Measured by ``benchmarks/classify_volume.py``.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

Progress = tuple[str, int, int]
# Slices per forward pass when the caller gives none.  On CPU each worker
# thread runs its own batches of about CPU_PIXELS input pixels (see
# :func:`cpu_batch`): small enough to keep activations near the core, large
# enough to spread the per-call cost; on a GPU a large batch fills the
# device.  CPU_BATCH: the slices a GPU path's worker prepares at a time.
CPU_PIXELS = 8 * 96 * 96
CPU_BATCH = 4
GPU_BATCH = 32
# Largest output difference (absolute and relative) accepted between the
# fused inference copy and the plain model on the probe input.
FUSE_TOLERANCE = 1e-4

_FAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FAST_LOCK = threading.Lock()


def optimized_model(loaded, with_features: bool = False):
    """The inference copy of ``loaded.model``, built once and cached.

    With ``with_features``, the copy is of ``WithFeatures(model)``
    (:mod:`napari_medcnn.models.features`): its output is ``[logits |
    penultimate features]``, (B, K + F), for the domain guard; None when the
    model cannot give its features that way.

    BatchNorm folded into convolutions, ReLU after max-pool and, on CPU,
    channels-last weights (see :mod:`napari_medcnn.models.fuse`).  The copy
    is kept beside the model object (weakly: it goes when the model leaves
    the checkpoint cache) and rebuilt when the model's weights change in
    place (fine-tuning).  The plain model is returned instead when it is in
    training mode or carries hooks (saliency), or when the copy's outputs on
    a probe input differ by more than :data:`FUSE_TOLERANCE`; results never
    depend on the copy.

    Args:
        loaded: a :class:`~napari_medcnn.models.checkpoint.LoadedModel`.

    Returns:
        A module with the same methods and outputs as ``loaded.model``.
    """
    net = loaded.model
    if net.training or _has_hooks(net):
        return _plain_with_features(loaded) if with_features else net
    version = _weights_version(net)
    with _FAST_LOCK:
        hit = _FAST.get(net, {}).get(with_features)
    if hit is not None and hit[0] == version:
        if hit[1] is False:  # no features from this model
            return None
        return net if hit[1] is None else hit[1]
    fast = _build_fast(loaded, with_features)
    with _FAST_LOCK:
        # None, not the model itself: a value must not keep its weak key alive
        _FAST.setdefault(net, {})[with_features] = (
            version,
            False if fast is None else None if fast is net else fast,
        )
    return fast


def _plain_with_features(loaded):
    import torch

    from napari_medcnn.models.features import features_model

    probe = _probe(loaded, torch.Generator().manual_seed(0))
    return features_model(loaded.model, probe)


def _probe(loaded, gen):
    import torch

    card = loaded.card
    size = list(card.input_size)
    if card.input_kind == "sequence":
        shape = (1, card.in_channels, 3, *size[-2:])
    elif card.input_kind == "volume":
        shape = (1, card.in_channels, *size)
    else:
        shape = (2, card.in_channels, *size[-2:])
    return torch.rand(shape, generator=gen).to(loaded.device)


def _has_hooks(net) -> bool:
    # a copy would carry a caller's hooks (saliency) into our threads
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    return any(getattr(m, n, None) for m in net.modules() for n in names)


def _weights_version(net) -> tuple[int, ...]:
    # a tensor's version counter moves on every in-place update (optimizer)
    return tuple(t._version for t in net.state_dict(keep_vars=True).values())


def _build_fast(loaded, with_features: bool = False):
    import torch

    from napari_medcnn.models.features import features_model
    from napari_medcnn.models.fuse import fuse_for_inference

    net, card = loaded.model, loaded.card
    gen = torch.Generator().manual_seed(0)
    probe = _probe(loaded, gen)
    shape = tuple(probe.shape)
    if with_features:
        net = features_model(net, probe)
        if net is None or card.input_kind != "slice":
            return net
    try:
        fast = fuse_for_inference(net, channels_last=loaded.device.type == "cpu")
    except Exception:  # an architecture the rewrites do not understand
        return net
    if not _same(net, fast, [probe]):
        return net
    if card.input_kind != "slice" or loaded.device.type != "cpu":
        return fast
    frozen = _frozen_for_cpu(fast, probe)
    # other batch sizes too: a classify call ends with a short batch
    probes = [probe, torch.rand((cpu_batch(shape) + 1, *shape[1:]), generator=gen)]
    return frozen if frozen is not None and _same(net, frozen, probes) else fast


def _same(net, other, probes) -> bool:
    """Outputs within :data:`FUSE_TOLERANCE` on every probe input (False
    when ``other`` fails: oneDNN lacks some operator forms, e.g. adaptive
    pooling to a size that does not divide the input)."""
    import torch

    with torch.inference_mode():
        for x in probes:
            try:
                pairs = list(zip(_outputs(net, x), _outputs(other, x)))
            except RuntimeError:
                return False
            for a, b in pairs:
                if not torch.allclose(a, b, atol=FUSE_TOLERANCE, rtol=FUSE_TOLERANCE):
                    return False
    return True


def _frozen_for_cpu(fast, probe):
    """A traced, frozen TorchScript copy of a 2D slice model for CPU, or None.

    ``torch.jit.freeze`` plus ``optimize_for_inference`` pre-pack the
    convolution weights for oneDNN and fuse convolution with its ReLU and
    residual add, which eager mode cannot: 1.72 -> 1.36 ms per 128 x 128
    slice for the default model on one core (``benchmarks/
    classify_volume.py``).  Both calls are deprecated in favour of
    ``torch.compile``, which needs a C++ compiler at run time that a user's
    machine may lack; any failure here (a future torch without them, an
    untraceable model) leaves the eager copy in use, and the caller checks
    the result against the plain model before using it.
    """
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # deprecation and tracer notes
            traced = torch.jit.trace(fast, probe, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception:
        return None


def _outputs(net, x) -> list:
    if hasattr(net, "forward_with_slices"):
        out = net.forward_with_slices(x)
        return [out.logits, out.slice_logits]
    return [net(x)]


def forward_numpy(net, x: np.ndarray, dev, with_slices: bool = False):
    """Run ``net`` on a prepared batch and return numpy logits.

    Inference mode is entered here, around the call, and not around a
    ``yield``: a suspended generator must not leave it on in its caller.

    Args:
        net: the model (plain or its :func:`optimized_model` copy).
        x: float32 (B, C, H, W) or (B, C, S, H, W) from ``prepare``.
        dev: the model's torch device.
        with_slices: call ``forward_with_slices`` (CNN+RNN models).

    Returns:
        float32 (B, K) logits, or ``(logits, slice_logits (B, S, K))``.
    """
    import torch

    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
        if with_slices:
            out = net.forward_with_slices(t)
            return (
                out.logits.float().cpu().numpy(),
                out.slice_logits.float().cpu().numpy(),
            )
        return net(t).float().cpu().numpy()


def cpu_batch(size) -> int:
    """Slices per forward pass on CPU for inputs of ``size`` (rows, cols)
    pixels: :data:`CPU_PIXELS` worth, 1 to 32 slices (4 at 128 x 128, 8 at
    96 x 96: measured with ``benchmarks/classify_volume.py``; at 96 x 96 a
    batch of 8 ran the default model 8 % faster than one of 4)."""
    h, w = (int(v) for v in list(size)[-2:])
    return int(max(1, min(32, CPU_PIXELS // max(1, h * w))))


def per_slice_logits(
    images, net, dev, record, inplane, rgb, batch_size, stats=None
) -> Generator[Progress, None, np.ndarray]:
    """Per-slice logits of co-registered volumes, batch by batch.

    CPU: ``torch.get_num_threads()`` worker threads each prepare and run
    whole batches with one intra-op thread (no thread barriers inside small
    operators; a batch stays in one core's cache); the caller's thread count
    is restored afterwards.  GPU: the worker threads prepare a few slices
    each (:data:`CPU_BATCH`) ahead, and this thread gathers them into
    device batches and runs the device.

    Args:
        images: (S, H, W) arrays, or (S, H, W, 3) with ``rgb``, one per
            channel.
        net: a 2D slice model; dev: its torch device.
        record: the card's preprocessing record.
        inplane: in-plane pixel size (row, col) in mm.
        rgb: the arrays carry a trailing RGB axis.
        batch_size: slices per forward pass; None for :func:`cpu_batch` of
            the record's size or :data:`GPU_BATCH`.
        stats: optional ``prepared (B, C, H, W) -> (B, E)`` statistics of
            each prepared batch (the domain guard's content rules), computed
            in the same worker and appended as E extra columns.

    Yields:
        ``("classify", slices_done, S)`` after each batch, in order.

    Returns:
        float32 (S, K) logits.
    """
    import torch

    from napari_medcnn.preprocessing.batch import prepare_slices

    n = images[0].shape[0]
    threads = torch.get_num_threads()
    cpu = _cpu_workers(dev) > 0
    size = batch_size or (cpu_batch(record["size"]) if cpu else GPU_BATCH)
    # CPU: whole batches per worker.  GPU: small pieces prepared by all the
    # threads, gathered here into device batches of ``size``.
    step = size if cpu else max(1, min(CPU_BATCH, size))
    spans = [(a, min(n, a + step)) for a in range(0, n, step)]
    workers = max(1, min(threads, len(spans)))
    window = 2 * workers + (0 if cpu else -(-size // step))

    def prep(span: tuple[int, int]) -> np.ndarray:
        a, b = span
        return prepare_slices([im[a:b] for im in images], record, inplane, rgb)

    def with_stats(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if stats is None:
            return out
        return np.concatenate([out, np.asarray(stats(x), out.dtype)], axis=1)

    def task(span: tuple[int, int]):
        if not cpu:
            x = prep(span)
            return x, (None if stats is None else np.asarray(stats(x), np.float32))
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)  # this worker thread only (OpenMP, MKL)
        x = prep(span)
        return with_stats(x, forward_numpy(net, x, dev))

    chunks: list[np.ndarray] = []
    ready: list[np.ndarray] = []  # GPU: prepared pieces of the next batch
    pool = ThreadPoolExecutor(workers, thread_name_prefix="medcnn-classify")
    try:
        for (_, stop), out in _in_order(pool, task, spans, window):
            if cpu:
                chunks.append(out)
            else:
                ready.append(out)
                if sum(len(r[0]) for r in ready) < size and stop < n:
                    continue
                logits = forward_numpy(net, np.concatenate([r[0] for r in ready]), dev)
                if stats is not None:
                    extra = np.concatenate([r[1] for r in ready]).astype(logits.dtype)
                    logits = np.concatenate([logits, extra], axis=1)
                chunks.append(logits)
                ready = []
            yield ("classify", stop, n)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # set_num_threads also sets the default that new threads start with
        torch.set_num_threads(threads)
    return np.concatenate(chunks)


def _cpu_workers(dev) -> int:
    """Threads that each prepare and run whole batches on a CPU; 0 on a GPU,
    where this thread drives the device and the workers prepare ahead."""
    import torch

    return torch.get_num_threads() if torch.device(dev).type == "cpu" else 0


def _in_order(
    pool: ThreadPoolExecutor,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    window: int,
) -> Iterator[tuple[Any, Any]]:
    """``(item, fn(item))`` in order, with at most ``window`` items queued."""
    todo = iter(items)
    pending: deque[tuple[Any, Future]] = deque()
    for item in todo:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            break
    while pending:
        item, fut = pending.popleft()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(fn, nxt)))
        yield item, fut.result()
