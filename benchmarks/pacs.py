"""Benchmark: PACS transfer against the disk, on a local Orthanc.

Run from the repository root (needs Debian's ``orthanc`` and
``orthanc-dicomweb``)::

    .venv/bin/python benchmarks/pacs.py [--slices 100] [--size 256] [--repeat 3]

It starts its own Orthanc (:class:`napari_medcnn.pacs.orthanc.LocalOrthanc`,
127.0.0.1, no authentication), writes a ``--slices``-slice MR series of
``--size``² int16 pixels with :func:`napari_medcnn.io.synth.write_series`,
STOWs it, and then, in the same run, times:

* ``disk``: :func:`napari_medcnn.io.load` of the series folder (warm page
  cache: the reference);
* ``wado``: WADO-RS retrieve of the series into a new cache folder
  (:meth:`DicomWebClient.retrieve_series`, atomic) plus the same ``load``;
  also the retrieve alone;
* ``pm_disk``: writing a ``--slices``-frame float32 Parametric Map (built
  by :func:`napari_medcnn.export.saliency_parametric_map` from a smooth
  synthetic map on the series, with the default model's card) to disk;
* ``pm_stow``: STOW-RS of the same file.

Each runs ``--repeat`` times (interleaved) and the best time counts.  It
prints the times, MB/s and the ratios ``wado / disk`` (the overhead of
fetching from a PACS instead of reading local files) and ``pm_stow /
pm_disk``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_medcnn._progress import drain  # noqa: E402
from napari_medcnn.io import load  # noqa: E402
from napari_medcnn.io.synth import write_series  # noqa: E402
from napari_medcnn.pacs import Server  # noqa: E402
from napari_medcnn.pacs.dicomweb import DicomWebClient  # noqa: E402
from napari_medcnn.pacs.orthanc import LocalOrthanc  # noqa: E402


def best(fn, repeat: int) -> tuple[float, object]:
    """(best wall time in s, the last result) of ``repeat`` calls."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def parametric_map(scan, out: Path) -> Path:
    """A float32 Parametric Map of a smooth blob on ``scan``'s grid
    (``napari_medcnn.export``), written to ``out``."""
    from napari_medcnn.export import write_parametric_map
    from napari_medcnn.models.checkpoint import default_model_path, load_checkpoint

    card = load_checkpoint(default_model_path(), "cpu").card
    z, y, x = np.mgrid[: scan.data.shape[0], : scan.data.shape[1], : scan.data.shape[2]]
    c = np.array(scan.data.shape) / 2
    blob = np.exp(-(((z - c[0]) / 20) ** 2 + ((y - c[1]) / 40) ** 2
                    + ((x - c[2]) / 40) ** 2))  # fmt: skip
    result = SimpleNamespace(
        map=blob.astype(np.float32), method="gradcam", target_name=card.classes[-1],
        model_id=card.model_id, model_name=card.name, classes=tuple(card.classes),
    )  # fmt: skip
    return write_parametric_map(result, scan, out, card=card, overwrite=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp,
        LocalOrthanc(check_called_aet=False) as orthanc,
    ):
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        vol = rng.integers(0, 2000, (args.slices, args.size, args.size))
        files = write_series(vol.astype(np.float64), tmp / "src",
                             spacing=(1.5, 0.9, 0.9), seed="bench")  # fmt: skip
        mb = sum(p.stat().st_size for p in files) / 1e6
        client = DicomWebClient(Server("bench", url=orthanc.dicomweb_url, timeout=300))
        t0 = time.perf_counter()
        stored = client.store(files)
        t_stow_series = time.perf_counter() - t0
        assert len(stored.stored) == len(files), stored.failed
        ref = load(tmp / "src")[0]
        study, series = (str(ref.metadata.get(k, "")) for k in
                         ("StudyInstanceUID", "SeriesInstanceUID"))  # fmt: skip
        if not (study and series):
            import pydicom

            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)

        runs = iter(range(10**6))

        def disk():
            return load(tmp / "src")[0]

        def retrieve_only():
            dest = tmp / f"cache{next(runs)}"
            return drain(client.retrieve_series(study, series, dest))

        def wado():
            return load(retrieve_only())[0]

        t_disk = t_wado = t_ret = float("inf")
        for _ in range(args.repeat):  # interleaved
            t_disk = min(t_disk, best(disk, 1)[0])
            t, scan = best(wado, 1)
            t_wado = min(t_wado, t)
            t_ret = min(t_ret, best(retrieve_only, 1)[0])
        assert np.array_equal(scan.data, ref.data), "retrieved volume differs"

        pm_path = parametric_map(ref, tmp / "pm.dcm")
        pm_mb = pm_path.stat().st_size / 1e6
        data = pm_path.read_bytes()

        def pm_disk():
            from napari_medcnn._atomic import atomic_write

            return atomic_write(tmp / "pm_copy.dcm", data)

        def pm_stow():
            res = client.store([pm_path])
            assert res.stored and not res.failed, res.failed
            return res

        t_pm_disk = t_pm_stow = float("inf")
        for _ in range(args.repeat):
            t_pm_disk = min(t_pm_disk, best(pm_disk, 1)[0])
            t_pm_stow = min(t_pm_stow, best(pm_stow, 1)[0])

    print(f"series: {args.slices} slices of {args.size}x{args.size} int16, "
          f"{mb:.1f} MB; Orthanc on 127.0.0.1, best of {args.repeat}")  # fmt: skip
    print(f"  STOW-RS of the series (once):   {t_stow_series:7.3f} s  "
          f"({mb / t_stow_series:6.1f} MB/s)")  # fmt: skip
    print(f"  disk:  io.load                  {t_disk:7.3f} s  "
          f"({mb / t_disk:6.1f} MB/s)")  # fmt: skip
    print(f"  wado:  WADO-RS retrieve + load  {t_wado:7.3f} s  "
          f"({mb / t_wado:6.1f} MB/s)")  # fmt: skip
    print(f"         (retrieve alone          {t_ret:7.3f} s)")
    print(f"  ratio wado / disk: {t_wado / t_disk:.2f}x")
    print(f"parametric map: {args.slices} float32 frames, {pm_mb:.1f} MB")
    print(f"  pm_disk: atomic write           {t_pm_disk:7.3f} s  "
          f"({pm_mb / t_pm_disk:6.1f} MB/s)")  # fmt: skip
    print(f"  pm_stow: STOW-RS                {t_pm_stow:7.3f} s  "
          f"({pm_mb / t_pm_stow:6.1f} MB/s)")  # fmt: skip
    print(f"  ratio pm_stow / pm_disk: {t_pm_stow / t_pm_disk:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
