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


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds of ``cmd`` and its peak child RSS so far (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return dt, rss


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
        best = {"classify": float("inf"), "local": float("inf"), "dask": float("inf")}
        peaks = {"classify": 0.0, "local": 0.0, "dask": 0.0}
        for r in range(args.repeat):
            out = root / f"classify-{r}.csv"
            dt, rss = timed([*CLI, "classify", *paths, "--csv", str(out)])
            best["classify"], peaks["classify"] = min(best["classify"], dt), rss
            for name in ("local", "dask"):
                out = root / f"{name}-{r}"
                dt, _ = timed([*cohort, "--out", str(out), "--executor", name])
                best[name] = min(best[name], dt)
                peaks[name] = max(peaks[name], worker_peak(out))
                shutil.rmtree(out, ignore_errors=True)
    n = args.items
    s, h, w = args.shape
    print(f"{n} items of {s}x{h}x{w} ({n_dicom} DICOM series, {n - n_dicom} "
          f"NIfTI), {args.workers} workers, best of {args.repeat}")  # fmt: skip
    for name, t in best.items():
        per = " per worker" if name != "classify" else " (one process)"
        print(f"{name:>9}: {t:7.2f} s  {n / t:6.2f} items/s  "
              f"peak RSS {peaks[name]:7.1f} MiB{per}")  # fmt: skip
    print(f"local / classify: {best['classify'] / best['local']:.2f}x "
          "(target >= 1.6)")  # fmt: skip
    print(f"dask / local:     {best['local'] / best['dask']:.2f}x "
          "(target >= 0.8)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
