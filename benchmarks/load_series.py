"""Benchmark: load a 300-slice 512x512 CT series (uncompressed) three ways.

Run from the repository root::

    .venv/bin/python benchmarks/load_series.py [--slices 300] [--size 512]

It writes the series with :func:`napari_medcnn.io.synth.write_series` into a
temporary folder, then, in the same run, times

* ``ours``: :func:`napari_medcnn.io.load` on the folder (folder scan + load,
  HU as ``int16``),
* ``sitk``: SimpleITK ``GetGDCMSeriesFileNames`` + ``ImageSeriesReader``
  (the same two steps: find the files, read them), array taken as a view;
  ``sitk_read`` is the read alone, for reference,
* ``naive``: a pydicom loop: ``dcmread`` each file, ``pixel_array``, sort by
  ImagePositionPatient along the normal, ``np.stack``.

How it measures, and why this is honest:

* every method runs in its **own fresh subprocess**, so no method inherits
  another's allocations or imports;
* files are read once beforehand so every method sees a warm page cache;
* time: best of ``--repeat`` (>= 3) runs inside that subprocess;
* peak memory: the process's resident-set high-water mark (``VmHWM``) is
  reset to its current RSS (``echo 5 > /proc/self/clear_refs``) right
  before the first run, and read right after it; the reported peak is that
  high-water mark minus the RSS before the run.  RSS counts every page
  touched, including SimpleITK's C++ buffers that ``tracemalloc`` cannot
  see.  (``ru_maxrss`` is not usable here: after fork+exec Linux carries the
  parent's peak into it; it is only the fallback, an over-estimate, when
  ``clear_refs`` is not writable.)

It prints the ratios ours/sitk and ours/naive and each method's peak
divided by the int16 volume's bytes (targets: ours/sitk <= 1.0, ours peak
<= 1.3x), then times the folder scan alone (``iter_scan_folder``) against a
bare pydicom header loop, per file.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import reset_peak, status_bytes


def _ours(folder: str):
    from napari_medcnn.io import load

    (scan,) = load(folder)
    return scan.data


def _sitk(folder: str, names_too: bool = True):
    import SimpleITK as sitk

    names = _sitk.names if not names_too and _sitk.names else None
    if names is None:
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)
        _sitk.names = names
    _sitk.image = None  # free the previous run's image first
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    _sitk.image = reader.Execute()  # the view below borrows its buffer
    return sitk.GetArrayViewFromImage(_sitk.image)


_sitk.names = None
_sitk.image = None


def _naive(folder: str):
    import numpy as np
    import pydicom

    slices = [pydicom.dcmread(p) for p in sorted(Path(folder).glob("*.dcm"))]
    iop = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(
        key=lambda ds: float(
            np.dot([float(v) for v in ds.ImagePositionPatient], normal)
        )
    )
    return np.stack([ds.pixel_array for ds in slices])


METHODS = {
    "ours": _ours,
    "sitk": _sitk,
    "sitk_read": lambda folder: _sitk(folder, names_too=False),
    "naive": _naive,
}


def worker(method: str, folder: str, repeat: int) -> dict:
    """Run one method in this (fresh) process; return times and peak memory."""
    import numpy  # noqa: F401  (imports are not part of the measurement)
    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401

    import napari_medcnn.io.dicom.load  # noqa: F401

    func = METHODS[method]
    if method == "sitk_read":  # file discovery is not part of this variant
        _sitk.names = SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(folder)
    gc.collect()
    before = status_bytes("VmRSS")
    exact = reset_peak()
    t0 = time.perf_counter()
    out = func(folder)
    times = [time.perf_counter() - t0]
    if exact:
        peak = status_bytes("VmHWM") - before
    else:  # ru_maxrss also remembers the import peak: an over-estimate
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    info = {
        "shape": list(out.shape),
        "dtype": str(out.dtype),
        "nbytes": int(out.nbytes),
    }
    del out
    for _ in range(repeat - 1):
        gc.collect()
        t0 = time.perf_counter()
        out = func(folder)
        times.append(time.perf_counter() - t0)
        del out
    return {"method": method, "times": times, "peak": peak, **info}


def scan_overhead(folder: str, repeat: int) -> tuple[float, float]:
    """Best ms/file of ``iter_scan_folder`` and of a bare pydicom header loop."""
    import pydicom

    from napari_medcnn.io.dicom.find import iter_scan_folder

    files = sorted(Path(folder).iterdir())

    def ours() -> None:
        gen = iter_scan_folder(folder)
        while True:
            try:
                next(gen)
            except StopIteration:
                return

    def bare() -> None:
        for p in files:
            pydicom.dcmread(p, stop_before_pixels=True)

    def best(func) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            func()
            times.append(time.perf_counter() - t0)
        return min(times) * 1000 / len(files)

    return best(ours), best(bare)


def run_method(method: str, folder: str, repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--dir", folder]
    cmd += ["--repeat", str(repeat)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_series(folder: Path, n: int, size: int) -> None:
    import numpy as np

    from napari_medcnn.io.synth import write_series

    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 2000, size=(n, size, size), dtype=np.int16)
    write_series(
        vol,
        folder,
        spacing=(1.25, 0.7, 0.7),
        modality="CT",
        intercept=-1024.0,
        series_description="benchmark",
        seed="benchmark",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default="ours,sitk,sitk_read,naive")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dir, max(1, args.repeat))))
        return
    repeat = max(3, args.repeat)
    with tempfile.TemporaryDirectory(prefix="medcnn-bench-") as tmp:
        folder = Path(tmp) / "ct"
        t0 = time.perf_counter()
        make_series(folder, args.slices, args.size)
        dt = time.perf_counter() - t0
        print(f"wrote {args.slices} slices of {args.size}^2 in {dt:.1f} s")
        for p in folder.iterdir():  # warm the page cache for every method alike
            p.read_bytes()
        vol_bytes = args.slices * args.size * args.size * 2  # int16 volume
        results = {}
        for m in args.methods.split(","):
            r = run_method(m, str(folder), repeat)
            results[m] = r
            runs = ", ".join(f"{t:.3f}" for t in r["times"])
            peak_mib, peak_x = r["peak"] / 2**20, r["peak"] / vol_bytes
            print(
                f"{m:10s} best {min(r['times']):7.3f} s  (runs {runs})  "
                f"peak +{peak_mib:7.1f} MiB = {peak_x:4.2f}x int16 volume  "
                f"-> {r['dtype']} {tuple(r['shape'])}"
            )
        scan_ms, bare_ms = scan_overhead(str(folder), repeat)
    best = {m: min(r["times"]) for m, r in results.items()}
    print(f"\nint16 volume: {vol_bytes / 2**20:.1f} MiB")
    if "ours" in best:
        for ref in ("sitk", "sitk_read", "naive"):
            if ref in best:
                print(f"ours / {ref:9s} time: {best['ours'] / best[ref]:.2f}x")
        print(
            f"ours peak / volume: {results['ours']['peak'] / vol_bytes:.2f}x "
            "(target <= 1.3x); ours/sitk target <= 1.0x"
        )
    print(
        f"folder scan: {scan_ms:.3f} ms/file (bare pydicom header parse "
        f"{bare_ms:.3f} ms/file; overhead {scan_ms - bare_ms:+.3f} ms/file)"
    )


if __name__ == "__main__":
    main()
