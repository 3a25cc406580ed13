"""Benchmark: napari's event-loop stall while the Fine-tune widget trains.

Run from the repository root, with a display (Xvfb)::

    xvfb-run -a .venv/bin/python benchmarks/finetune_stall.py [--n 200] [--epochs 2]

A real napari window is opened; a synthetic MR-like volume of ``--n``
slices (128 x 128, half of them with a bright "lesion") is labelled by
range through the "Label images" widget, and the "Fine-tune" widget trains
the default model on those ``--n`` labelled slices, hold-out split, batch
32, for ``--epochs`` epochs, once in a worker thread and once in a spawned
subprocess (both with ``cores - 1`` torch threads, leaving a core for the
UI).  A 10 ms ``QTimer`` probe runs in napari's event loop meanwhile; the
longest gap between two of its ticks is the longest stall a user would
feel.  Reported per mode (ms): the longest and 99th-percentile gap while
training batches run, the longest over the whole job (data preparation
and, for the subprocess, its start), the training time, and the idle reference: the
longest gap of the same probe with nothing running, measured first in the
same run (on a busy shared machine it is far above 10 ms).  Ratios: stall
/ 100 ms target (<= 1 meets it), stall / idle reference, and thread /
subprocess.  Prints JSON.  The first mode also pays the first import of
torch and MONAI in its worker (see ``max_stall_whole_job_ms``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_MS = 100.0
PROBE_MS = 10


class Probe:
    """A 10 ms QTimer; records every tick's time (perf_counter, s)."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self):
        self.ticks = []
        self.timer.start()

    def stop(self):
        self.timer.stop()

    def gaps_ms(self, t0: float | None = None, t1: float | None = None) -> np.ndarray:
        t = np.asarray(self.ticks)
        if t0 is not None:
            t = t[(t >= t0) & (t <= (t1 if t1 is not None else np.inf))]
        return np.diff(t) * 1000.0 if len(t) > 1 else np.zeros(1)


def pump(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def write_volume(path: Path, n: int) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    head = ((yy - 64) ** 2 / 55**2 + (xx - 64) ** 2 / 45**2) < 1
    vol = np.where(head, 300.0, 0.0)[None] + rng.normal(0, 30, (n, 128, 128))
    for i in range(n // 2, n):
        cy, cx = rng.integers(40, 88, 2)
        vol[i][(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(36, 144)] += 400
    nib.save(
        nib.Nifti1Image(vol.astype(np.float32).transpose(2, 1, 0), np.eye(4)), str(path)
    )
    return path


def measure(viewer, train, probe, mode: str, epochs: int) -> dict:
    from qtpy.QtWidgets import QApplication

    batch_times: list[float] = []
    train.set_mode(mode)
    train.epochs_spin.setValue(epochs)
    probe.start()
    pump(0.5)
    t_start = time.perf_counter()
    assert train.start(), train.status.text()
    train.worker.yielded.connect(
        lambda ev: (
            batch_times.append(time.perf_counter())
            if getattr(ev, "kind", "") == "batch"
            else None
        )
    )
    while train.worker is not None:
        QApplication.processEvents()
        time.sleep(0.001)
    t_end = time.perf_counter()
    pump(0.3)
    probe.stop()
    if train.summary is None or train.summary.get("cancelled"):
        raise RuntimeError(f"{mode}: training did not finish: {train.status.text()}")
    t0, t1 = batch_times[0], batch_times[-1]
    during = probe.gaps_ms(t0, t1)
    whole = probe.gaps_ms(t_start, t_end)
    return {
        "max_stall_ms": round(float(during.max()), 1),
        "p99_stall_ms": round(float(np.percentile(during, 99)), 1),
        "max_stall_whole_job_ms": round(float(whole.max()), 1),
        "train_s": round(t1 - t0, 2),
        "job_s": round(t_end - t_start, 2),
        "batches": len(batch_times),
        "ratio_to_target": round(float(during.max()) / TARGET_MS, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="labelled 128x128 slices")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--modes", default="thread,subprocess")
    args = p.parse_args(argv)

    import napari

    from napari_medcnn.widgets.training.jobs import ui_threads

    tmp = Path(tempfile.mkdtemp(prefix="medcnn-stall-"))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    layer = viewer.open(write_volume(tmp / "synthetic.nii.gz", args.n),
                        plugin="napari-medcnn")[0]  # fmt: skip
    _d, labels = viewer.window.add_plugin_dock_widget("napari-medcnn", "Label images")
    labels.set_layer(layer)
    labels.set_classes(["no_tumor", "tumor"])
    labels.set_target("range")
    labels.set_range(0, args.n // 2 - 1)
    labels.label("no_tumor")
    labels.set_range(args.n // 2, args.n - 1)
    labels.label("tumor")
    _d, train = viewer.window.add_plugin_dock_widget("napari-medcnn", "Fine-tune")
    train.set_parent("default")
    train.set_output(tmp / "tuned.safetensors")
    train.set_split("holdout")
    probe = Probe()
    probe.start()
    pump(2.0)
    probe.stop()
    idle = probe.gaps_ms()
    out = {
        "benchmark": "finetune_stall",
        "n_labelled": args.n,
        "epochs": args.epochs,
        "cpu_count": os.cpu_count(),
        "torch_threads": ui_threads(),
        "probe_ms": PROBE_MS,
        "target_ms": TARGET_MS,
        "idle_max_gap_ms": round(float(idle.max()), 1),
        "modes": {},
    }
    for mode in args.modes.split(","):
        r = measure(viewer, train, probe, mode, args.epochs)
        idle_ms = max(out["idle_max_gap_ms"], 1.0)
        r["ratio_to_idle"] = round(r["max_stall_ms"] / idle_ms, 2)
        out["modes"][mode] = r
    m = out["modes"]
    if "thread" in m and "subprocess" in m:
        out["ratio_thread_to_subprocess"] = round(
            m["thread"]["max_stall_ms"] / max(m["subprocess"]["max_stall_ms"], 1e-9), 2
        )
        out["faster_training"] = min(m, key=lambda k: m[k]["train_s"])
        out["smoother_ui"] = min(m, key=lambda k: m[k]["max_stall_ms"])
    print(json.dumps(out, indent=1))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
