"""Benchmark: a cohort run against the sequential ``classify`` command.

Run from the repository root::

    .venv/bin/python benchmarks/cohort.py [--items 40] [--shape 64 256 256]
        [--workers 2] [--repeat 1]

It writes ``--items`` volumes of real anatomy (slabs of the shipped Colin27
head, :func:`napari_medcnn.io.synth.write_cohort`: half DICOM series, half
NIfTI) and times, as whole commands (start-up, model load and all), on a
warm page cache, interleaved per repeat:

* ``classify``: ``napari-medcnn classify PATH...`` over the same items in
  one process (the reference: what a user ran before cohorts);
* ``local``: ``napari-medcnn cohort --executor local --workers N``
  (journal, results, thumbnails and report included);
* ``dask``: the same with ``--executor dask`` (a ``LocalCluster`` of N
  single-threaded workers).

It prints items/s, the ratios ``local`` / ``classify`` (target >= 1.6 on 2
cores) and ``dask`` / ``local`` (target >= 0.8: the overhead bound), and
the peak resident memory per worker (MiB, the largest
``worker_peak_rss_mb`` in the results) and of the ``classify`` process.
The best time of ``--repeat`` counts.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_medcnn.io.synth import write_cohort  # noqa: E402

CLI = [sys.executable, "-m", "napari_medcnn.cli"]


def _child_cpu() -> float:
    """CPU seconds (user + system) of all finished children so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds of ``cmd``, its CPU seconds (user + system, itself and
    its children) and the peak child RSS so far (MiB)."""
    c0, t0 = _child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return dt, _child_cpu() - c0, rss


def worker_peak(out: Path) -> float:
    """The largest per-worker peak RSS in a cohort's results, MiB."""
    with open(out / "results.csv", newline="") as fh:
        values = [float(r["worker_peak_rss_mb"] or 0) for r in csv.DictReader(fh)]
    return max(values, default=0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_dicom = args.items // 2
        made = write_cohort(
            root / "in", n_dicom=n_dicom, n_nifti=args.items - n_dicom, n_png=0,
            corrupt=(), non_image_folder=False, shape=args.shape,
        )  # fmt: skip
        paths = [str(p) for p in made["dicom"] + made["nifti"]]
        for p in (root / "in").rglob("*"):  # warm the page cache
            if p.is_file():
                p.read_bytes()
        cohort = [*CLI, "cohort", str(root / "in"), "--workers", str(args.workers)]
        names = ("classify", "classify-1t", "local", "dask")
        best = dict.fromkeys(names, float("inf"))
        peaks = dict.fromkeys(names, 0.0)
        cores = dict.fromkeys(names, 0.0)  # CPU s / wall s of the best run
        one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for r in range(args.repeat):
            for name, env in (("classify", None), ("classify-1t", one_thread)):
                out = root / f"{name}-{r}.csv"
                dt, cpu, rss = timed([*CLI, "classify", *paths, "--csv", str(out)], env)
                if dt < best[name]:
                    best[name], cores[name] = dt, cpu / dt
                peaks[name] = max(peaks[name], rss)
            for name in ("local", "dask"):
                out = root / f"{name}-{r}"
                dt, cpu, _ = timed([*cohort, "--out", str(out), "--executor", name])
                if dt < best[name]:
                    cores[name] = cpu / dt
                best[name] = min(best[name], dt)
                peaks[name] = max(peaks[name], worker_peak(out))
                shutil.rmtree(out, ignore_errors=True)
    n = args.items
    s, h, w = args.shape
    print(f"{n} items of {s}x{h}x{w} ({n_dicom} DICOM series, {n - n_dicom} "
          f"NIfTI), {args.workers} workers, best of {args.repeat}")  # fmt: skip
    for name, t in best.items():
        per = " per worker" if name in ("local", "dask") else " (one process)"
        print(f"{name:>11}: {t:7.2f} s  {n / t:6.2f} items/s  {cores[name]:4.2f} "
              f"cores busy  peak RSS {peaks[name]:7.1f} MiB{per}")  # fmt: skip
    print(f"local / classify: {best['classify'] / best['local']:.2f}x "
          "(target >= 1.6)")  # fmt: skip
    ncpu = os.cpu_count() or 1
    print(f"  classify already keeps {cores['classify']:.2f} of {ncpu} cores busy "
          "(threaded read/prepare/infer pipeline, torch intra-op threads), so no "
          f"executor on {ncpu} cores can beat it by more than about "
          f"{ncpu / max(cores['classify'], 1e-9):.2f}x")  # fmt: skip
    print(f"local / classify with one torch thread (OMP_NUM_THREADS=1): "
          f"{best['classify-1t'] / best['local']:.2f}x")  # fmt: skip
    print(f"dask / local:     {best['local'] / best['dask']:.2f}x "
          "(target >= 0.8)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
