"""Multi-process training under ``torchrun``: the plumbing, kept apart.

``torchrun --nproc_per_node=N`` starts N copies of a command with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment.
:func:`process_group` reads them, joins the processes into one
``torch.distributed`` group (gloo on CPU, NCCL on CUDA with each process
on ``cuda:LOCAL_RANK``) and tears it down on the way out, also on error.
Without those variables (or with ``WORLD_SIZE=1``) it does nothing, and
every helper here is then an identity, so the single-process path stays
exactly what it was.

The trainer asks :func:`current` (the state of ``torch.distributed``) how
many processes share the run; the helpers shard the *training* indices
(:func:`train_sampler`, a seeded :class:`DistributedSampler`), shard and
re-assemble validation predictions (:func:`shard` / :func:`gather_rows`),
sum metrics (:func:`sum_across`), agree on cancelling
(:func:`any_rank`), average BatchNorm statistics (:func:`average_buffers`)
and check that every replica ended with the same weights
(:func:`replicas_identical`).  Only :func:`is_main` (rank 0) writes.

Why not ``SyncBatchNorm``: it runs on GPUs only (not on gloo/CPU), and it
adds one collective per BatchNorm layer per forward pass.  Each process
normalises with its own batch (as plain DDP does); the running statistics
are averaged across processes after every epoch, so all replicas evaluate
and save the same buffers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DistributedSampler

#: environment variable: a folder where each rank writes its final weights
#: (``rank<R>.safetensors``) so a test can compare the replicas itself
DUMP_REPLICAS_ENV = "NAPARI_MEDCNN_DUMP_REPLICAS"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a run.

    Attributes:
        world_size: processes in the run (1: a plain single-process run).
        rank: this process's index in ``range(world_size)``; 0 writes.
        local_rank: its index on this machine (picks ``cuda:local_rank``).
        backend: ``"gloo"``, ``"nccl"`` or None (single process).
        device: the torch device this process trains on (None: the
            trainer's default, cuda, then mps, then cpu).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    device: str | None = None

    @property
    def enabled(self) -> bool:
        """True when more than one process shares the run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes and prints."""
        return self.rank == 0


def from_environment(env: dict[str, str] | None = None) -> DistContext:
    """The run described by torchrun's variables (default ``os.environ``).

    Returns a single-process context when ``WORLD_SIZE`` is absent or 1.

    Raises:
        ValueError: ``WORLD_SIZE`` > 1 without a valid ``RANK``.
    """
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DistContext()
        rank = int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise ValueError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (start "
            "multi-process training with torchrun)"
        ) from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return DistContext(world, rank, local)


def _resolve_device(requested: str | None, local_rank: int) -> torch.device:
    """CUDA (this process's GPU) when asked for or available, else CPU."""
    if requested is None:
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(requested).type
    if kind == "cuda":
        return torch.device("cuda", local_rank)
    if kind == "cpu":
        return torch.device("cpu")
    raise ValueError(
        f"multi-process training runs on cpu (gloo) or cuda (NCCL), not {kind}"
    )


@contextlib.contextmanager
def process_group(
    device: str | None = None, env: dict[str, str] | None = None
) -> Iterator[DistContext]:
    """Join the torchrun process group for the duration of a ``with`` block.

    Args:
        device: the requested device (``--device``); under torchrun a CUDA
            request (or none, with a GPU present) becomes
            ``cuda:LOCAL_RANK`` and the backend NCCL, else CPU and gloo.
        env: environment to read (default ``os.environ``).

    Yields:
        The :class:`DistContext` (``device`` set to what to train on); a
        single-process context, with ``device`` unchanged and no group,
        when not started by torchrun.

    Raises:
        ValueError: an unusable device (e.g. mps) or torchrun variables.
    """
    ctx = from_environment(env)
    if not ctx.enabled:
        yield DistContext(device=device)
        return
    import torch.distributed as dist

    dev = _resolve_device(device, ctx.local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size)
    try:
        yield DistContext(ctx.world_size, ctx.rank, ctx.local_rank, backend, str(dev))
    finally:
        dist.destroy_process_group()


def current() -> DistContext:
    """The run this process is part of now (from ``torch.distributed``)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    world = dist.get_world_size()
    if world <= 1:
        return DistContext()
    rank = dist.get_rank()
    local = int(os.environ.get("LOCAL_RANK", rank))
    return DistContext(world, rank, local, str(dist.get_backend()))


def is_main() -> bool:
    """True in a single-process run and on rank 0 of a multi-process one."""
    return current().is_main


def _device_for_collectives() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU tensors."""
    if current().backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_across(*values: float) -> tuple[float, ...]:
    """Sum each value over all processes (float64; the same on every rank).

    Single process: the values unchanged.
    """
    if not current().enabled:
        return tuple(float(v) for v in values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_device_for_collectives())
    dist.all_reduce(t)
    return tuple(float(v) for v in t.cpu())


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one (so all
    processes stop at the same batch)."""
    if not current().enabled:
        return bool(flag)
    return sum_across(float(bool(flag)))[0] > 0


def shard(n: int) -> range:
    """This process's rows of ``n`` (rank, rank + world, ...; no padding).

    The rows of all ranks together are ``range(n)``, each once.
    """
    ctx = current()
    return range(ctx.rank, n, ctx.world_size)


def gather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Re-assemble rows computed on :func:`shard` (n) by every process.

    Args:
        local: this process's rows, in :func:`shard` order, shape (m, ...).
        n: total rows.

    Returns:
        All n rows in their original order, the same array on every rank.
    """
    ctx = current()
    if not ctx.enabled:
        return local
    import torch.distributed as dist

    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, np.asarray(local))
    shapes = [p.shape[1:] for p in parts if len(p)]
    out = np.zeros((n, *(shapes[0] if shapes else ())), dtype=local.dtype)
    for r, part in enumerate(parts):
        if len(part):
            out[r :: ctx.world_size] = part
    return out


class _WeightedDistributedSampler(DistributedSampler):
    """Class-balanced sampling with replacement, sharded like
    :class:`DistributedSampler`: every rank draws the same indices (same
    seed and epoch) and keeps its own share."""

    def __init__(self, dataset, weights: np.ndarray, **kwargs):
        super().__init__(dataset, **kwargs)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(
            self.weights, self.total_size, replacement=True, generator=g
        )
        return iter(drawn[self.rank : self.total_size : self.num_replicas].tolist())


def train_sampler(
    dataset, seed: int, weights: np.ndarray | None = None
) -> DistributedSampler:
    """A seeded sampler giving this process its share of the training set.

    Call ``set_epoch(epoch)`` before each epoch so the shuffle changes.
    Every rank gets ``ceil(N / world_size)`` items (a few repeated to even
    out), so all take the same number of steps.

    Args:
        dataset: the *training* part only (validation is never sampled).
        seed: the run's seed (the same on every rank).
        weights: per-item sampling weights for class-balanced sampling
            with replacement; None shuffles without replacement.
    """
    ctx = current()
    kw = {"num_replicas": ctx.world_size, "rank": ctx.rank, "seed": seed}
    if weights is not None:
        return _WeightedDistributedSampler(dataset, weights, **kw)
    return DistributedSampler(dataset, shuffle=True, **kw)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` (single process: as is).

    Wrapping copies rank 0's parameters and buffers to every rank, so all
    replicas start the same; gradients are averaged across ranks at every
    backward pass, for the parameters that require grad at wrapping time
    (wrap again after freezing or unfreezing some).  Buffers are not
    broadcast at each forward pass: :func:`average_buffers` syncs them.
    """
    if not current().enabled:
        return model
    import inspect

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    # torch 2.13 renamed the switch (the old one still works, with a warning)
    new = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
    no_forward_sync = {"forward_sync_buffers" if new else "broadcast_buffers": False}
    ids = [device.index] if device.type == "cuda" else None
    net = DDP(model, device_ids=ids, **no_forward_sync)
    for buf in model.buffers():  # broadcast_buffers=False skips them at init
        dist.broadcast(buf, 0)
    return net


def no_sync(net: nn.Module, sync: bool):
    """A context that skips the gradient all-reduce of this backward pass
    (accumulating batches) unless ``sync``; a no-op for a plain module."""
    if sync or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running mean and variance)
    over all processes, in place, so every replica holds the same ones."""
    ctx = current()
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(ctx.world_size)


def state_digest(module: nn.Module) -> str:
    """sha256 (hex) of a module's parameters and buffers, in state order."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def all_equal(value: str) -> bool:
    """True when ``value`` (a string, e.g. a digest) is the same on every
    rank; always True in a single process."""
    ctx = current()
    if not ctx.enabled:
        return True
    import torch.distributed as dist

    values: list = [None] * ctx.world_size
    dist.all_gather_object(values, value)
    return len(set(values)) == 1


def replicas_identical(module: nn.Module) -> bool:
    """True when every rank holds bit-identical parameters and buffers."""
    return all_equal(state_digest(module))


def check_same_split(folds: Sequence[tuple[np.ndarray, np.ndarray]], *keys) -> None:
    """Refuse to train when the ranks planned different splits.

    Every rank plans the train/validation split itself from the same
    labels, groups and seed; this compares a digest of the plan (and of
    ``keys``, e.g. the labels and groups) across ranks.

    Raises:
        RuntimeError: the ranks disagree (their inputs differ).
    """
    if not current().enabled:
        return
    h = hashlib.sha256()
    for part in (*keys, *(i for pair in folds for i in pair)):
        h.update(np.asarray(part).astype(str).tobytes())
    if not all_equal(h.hexdigest()):
        raise RuntimeError(
            "the processes planned different train/validation splits: they "
            "must read the same labels in the same order"
        )


def dump_replica(module: nn.Module, env: dict[str, str] | None = None) -> None:
    """Write this rank's final weights to ``$NAPARI_MEDCNN_DUMP_REPLICAS``
    (``rank<R>.safetensors``) when that variable names a folder (a debug
    aid: the torchrun test compares the replicas with it)."""
    folder = (os.environ if env is None else env).get(DUMP_REPLICAS_ENV)
    if not folder:
        return
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()
    }
    save_file(state, os.path.join(folder, f"rank{current().rank}.safetensors"))
