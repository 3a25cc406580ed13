"""A fixed-seed sample of ``scripts/fuzz_reader.py``: mutated pydicom files
never crash or hang the reader, and every error names its file.  (The full
run, >= 10,000 mutants, is in the README.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_reader.py"


def _fuzz(tmp_path, *args: str, timeout: float = 240) -> tuple[int, dict]:
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out), "--keep",
         str(tmp_path / "kept"), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert out.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(out.read_text())


def _module():
    spec = importlib.util.spec_from_file_location("fuzz_reader", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_reader", mod)  # dataclasses look it up
    spec.loader.exec_module(sys.modules["fuzz_reader"])
    return sys.modules["fuzz_reader"]


def test_fixed_seed_sample_has_no_crash_hang_or_unnamed_error(tmp_path):
    rc, s = _fuzz(tmp_path, "-n", "300", "--seed", "7", "--max-seed-bytes",
                  "200000", "--timeout", "60")  # fmt: skip
    assert s["mutants"] == 300 and s["seed_files"] > 150
    assert (s["crashes"], s["hangs"], s["unnamed_errors"]) == (0, 0, 0), s["failures"]
    assert s["stderr_leaks"] == 0, s["leak_examples"]
    assert s["ok"] + s["clean_errors"] == 300 and s["ok"] > 0
    assert set(s["by_mutation"]) == {
        "flip_header", "flip_pixels", "junk", "smash_length", "truncate"
    }  # fmt: skip
    assert rc == 0


def test_rle_sample_catches_real_decoder_panics(tmp_path):
    """RLE seeds only: these mutants made pylibjpeg-rle panic and took the
    reader down before the panic was caught (10 of 300 with seed 1)."""
    rc, s = _fuzz(tmp_path, "-n", "150", "--seed", "1", "--match", "RLE",
                  "--timeout", "60")  # fmt: skip
    assert (s["crashes"], s["hangs"], s["unnamed_errors"]) == (0, 0, 0), s["failures"]
    assert s["decoder_panics_caught"] >= 1 and s["stderr_leaks"] == 0
    assert rc == 0


def test_a_dying_worker_is_a_crash_and_a_slow_one_a_hang(tmp_path):
    # 40 MiB of address space: the worker cannot even import numpy and dies
    rc, s = _fuzz(tmp_path, "-n", "2", "--memory-mb", "40", "--max-seed-bytes",
                  "20000")  # fmt: skip
    assert s["crashes"] == 2 and rc == 1
    assert all("worker died" in f["result"]["message"] for f in s["failures"])
    assert all(Path(f["kept"]).exists() for f in s["failures"])
    # no worker starts within 10 ms: each mutant is a hang, the worker killed
    rc, s = _fuzz(tmp_path, "-n", "2", "--timeout", "0.01", "--max-seed-bytes",
                  "20000")  # fmt: skip
    assert s["hangs"] == 2 and rc == 1


def test_mutants_are_reproducible_from_the_run_seed():
    fz = _module()
    seeds = [fz.load_seed(p) for p in fz.find_seeds(50_000)[:20]]
    one = [fz.make_mutant(seeds, 5, i) for i in range(30)]
    two = [fz.make_mutant(seeds, 5, i) for i in range(30)]
    assert [(s.name, d, k) for s, d, k in one] == [(s.name, d, k) for s, d, k in two]
    other = [fz.make_mutant(seeds, 6, i)[1] for i in range(30)]
    assert other != [d for _, d, _ in one]
    assert all(d != s.data for s, d, _ in one)  # every mutant differs from its seed


def test_smashed_length_fields_are_real_length_fields():
    """The recorded offsets are where CT_small.dcm keeps the lengths of a
    short-form (PN, 2 bytes) and a long-form (OW pixel data, 4 bytes)
    element, and of its file meta elements."""
    import pydicom
    from pydicom.data import get_testdata_file

    fz = _module()
    path = get_testdata_file("CT_small.dcm", download=False)
    seed = fz.load_seed(path)
    fields = set(seed.length_fields)
    ds = pydicom.dcmread(path)
    name, pixels = ds.get_item(0x00100010), ds.get_item(0x7FE00010)
    assert (name.value_tell - 2, 2) in fields
    assert (
        pixels.value_tell - 4,
        4,
    ) in fields and seed.pixel_start == pixels.value_tell
    assert (132 + 6, 2) in fields  # (0002,0000) group length: UL, 2-byte length
    assert len(fields) > len(ds)  # meta + every top-level element
