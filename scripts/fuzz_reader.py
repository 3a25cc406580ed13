"""Fuzz the DICOM reader with mutated copies of real files.

    .venv/bin/python scripts/fuzz_reader.py -n 10000 --seed 1 --workers 1

Seeds: every DICOM file that ``pydicom.data.get_testdata_files()`` finds
locally (pydicom's own test files and, when installed, pydicom-data's),
never downloaded, up to ``--max-seed-bytes`` each.  Mutant ``i`` is made
from ``random.Random(f"{seed}:{i}")`` alone, so a run is reproducible
whatever the number of workers, and ``--only I`` remakes one mutant.

Mutations (one per mutant, chosen at random):

* ``flip_header``: 1-8 bytes of the header (after the preamble, before the
  pixel data) XORed with a random bit or set to 0x00/0xFF/random,
* ``flip_pixels``: the same inside the pixel data (header if none),
* ``truncate``: the file cut at a random offset,
* ``junk``: 1-64 random bytes inserted at a random offset,
* ``smash_length``: the length field of a random element (file meta,
  top-level data set, or an encapsulated pixel data item) set to 0, 1,
  its value +-1, doubled, 0xFFFF(FFFF) or random.

Each mutant is read in a worker subprocess through the plugin's public
reader, ``napari_medcnn.io.load``, and through npe2 (``npe2.read`` with
the plugin's manifest, i.e. what napari's *File > Open* runs).  A worker
is restarted when it dies (a *crash*, attributed to the mutant it was
reading) or when a mutant takes longer than ``--timeout`` seconds (a
*hang*: the worker is killed).  An exception that is not an ``Exception``
(a Rust panic, SystemExit...) escaping either reader is a crash too.

Counts (one outcome per mutant, the worse of the two readers):

* ``ok``: both readers returned layers,
* ``clean_errors``: an error whose message names the mutant's path,
* ``unnamed_errors``: an error whose message does not name it,
* ``crashes``, ``hangs``: see above,
* ``stderr_leaks`` (counted apart): mutants during whose read something
  reached file descriptor 2 (native decoders writing to the terminal;
  Python warnings and log records are kept out of this count),
* ``decoder_panics_caught`` (counted apart): clean errors that were a
  native decoder's panic (pylibjpeg-rle), turned into a ScanReadError.

Prints a JSON summary (``--json FILE`` writes it too); exit status 1 when
any crash, hang or unnamed error was seen.  Crashing and hanging mutants
are kept in ``--keep`` (default: a folder under the system temp folder).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MUTATIONS = ("flip_header", "flip_pixels", "truncate", "junk", "smash_length")
#: VRs with a 4-byte length field in explicit VR encoding.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
            b"UR", b"UT", b"UV"}  # fmt: skip
ITEM_TAG = b"\xfe\xff\x00\xe0"


# -- seeds ---------------------------------------------------------------------
@dataclass
class Seed:
    """One seed file and where its parts lie (byte offsets)."""

    name: str
    data: bytes
    header_start: int  # after the 128-byte preamble and "DICM", else 0
    pixel_start: int | None  # first byte of the pixel data value
    length_fields: list[tuple[int, int]] = field(default_factory=list)  # (at, size)


def _meta_length_fields(data: bytes, start: int) -> list[tuple[int, int]]:
    """Length fields of the file meta group (explicit VR little endian)."""
    out, pos = [], start
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        vr = data[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > len(data):
                break
            (n,) = struct.unpack_from("<I", data, pos + 8)
            out.append((pos + 8, 4))
            pos += 12 + n
        else:
            (n,) = struct.unpack_from("<H", data, pos + 6)
            out.append((pos + 6, 2))
            pos += 8 + n
    return out


def _item_length_fields(data: bytes, start: int) -> list[tuple[int, int]]:
    """Length fields of the items of encapsulated pixel data at ``start``."""
    out, pos = [], start
    while pos + 8 <= len(data) and data[pos : pos + 4] == ITEM_TAG:
        out.append((pos + 4, 4))
        (n,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8 + n
    return out


def load_seed(path: str) -> Seed:
    """Read a seed and locate its header, pixel data and length fields."""
    import pydicom
    from pydicom.dataelem import RawDataElement

    data = Path(path).read_bytes()
    preamble = len(data) >= 132 and data[128:132] == b"DICM"
    start = 132 if preamble else 0
    seed = Seed(Path(path).name, data, start, None)
    if preamble:
        seed.length_fields += _meta_length_fields(data, start)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
        tags = list(ds.keys())
    except Exception:  # some seeds are deliberately broken: flips only
        return seed
    for tag in tags:
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement) or elem.value_tell is None:
            continue
        tell = int(elem.value_tell)
        if tag == 0x7FE00010:
            seed.pixel_start = tell
            if elem.length == 0xFFFFFFFF:
                seed.length_fields += _item_length_fields(data, tell)
        long = elem.is_implicit_VR or str(elem.VR or "").encode() in LONG_VRS
        size = 4 if long else 2
        fmt = "<I" if long else "<H"
        if tell < size or struct.unpack_from(fmt, data, tell - size)[0] != elem.length:
            continue  # big endian, or not where we think: leave it alone
        seed.length_fields.append((tell - size, size))
    return seed


def find_seeds(max_bytes: int, match: str = "") -> list[str]:
    """Local pydicom / pydicom-data DICOM files up to ``max_bytes`` (whose
    name contains ``match``), sorted by name (then size) so that a seed
    number means the same file anywhere."""
    from pydicom.data import get_testdata_files

    from napari_medcnn.io import detect_format

    paths = set()
    for p in get_testdata_files():
        if match and match not in Path(p).name:
            continue
        try:
            if os.path.getsize(p) <= max_bytes and detect_format(p) == "dicom":
                paths.add(os.path.realpath(p))
        except OSError:
            continue
    return sorted(paths, key=lambda p: (Path(p).name, os.path.getsize(p), p))


# -- mutations -------------------------------------------------------------------
def _flip(buf: bytearray, lo: int, hi: int, rng: random.Random) -> None:
    if hi <= lo:
        lo, hi = 0, len(buf)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(lo, hi)
        how = rng.randrange(4)
        if how == 0:
            buf[at] = 0x00
        elif how == 1:
            buf[at] = 0xFF
        elif how == 2:
            buf[at] = rng.randrange(256)
        else:
            buf[at] ^= 1 << rng.randrange(8)


def mutate(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``seed`` and the name of its mutation."""
    buf = bytearray(seed.data)
    kind = rng.choice(MUTATIONS)
    end = len(buf)
    pix = seed.pixel_start
    if kind == "smash_length" and not seed.length_fields:
        kind = "flip_header"
    if kind == "flip_pixels" and (pix is None or pix >= end):
        kind = "flip_header"
    if kind == "flip_header":
        _flip(buf, seed.header_start, pix if pix is not None else end, rng)
    elif kind == "flip_pixels":
        _flip(buf, pix, end, rng)
    elif kind == "truncate":
        buf = buf[: rng.randrange(seed.header_start, max(seed.header_start + 1, end))]
    elif kind == "junk":
        at = rng.randrange(seed.header_start, end + 1)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        at, size = rng.choice(seed.length_fields)
        fmt = "<I" if size == 4 else "<H"
        top = (1 << (8 * size)) - 1
        (old,) = struct.unpack_from(fmt, buf, at)
        new = rng.choice([0, 1, old + 1, old - 1, old * 2, top, rng.randrange(top)])
        struct.pack_into(fmt, buf, at, new & top)
    return bytes(buf), kind


def make_mutant(seeds: list[Seed], run_seed: int, i: int) -> tuple[Seed, bytes, str]:
    """Mutant ``i`` of a run: depends only on ``run_seed`` and ``i``."""
    rng = random.Random(f"{run_seed}:{i}")
    seed = seeds[rng.randrange(len(seeds))]
    data, kind = mutate(seed, rng)
    return seed, data, kind


# -- the worker (a subprocess) ---------------------------------------------------
def _outcome(path: str, func) -> dict:
    try:
        func()
    except Exception as exc:
        msg = str(exc)
        return {
            "status": "error",
            "type": type(exc).__name__,
            "message": msg[:400],
            "names_file": path in msg,
        }
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a panic, SystemExit...: napari would die
        return {
            "status": "crash",
            "type": type(exc).__name__,
            "message": str(exc)[:400],
        }
    return {"status": "ok"}


def worker_main(memory_mb: int) -> None:
    """Read mutant paths from stdin, one JSON result line per mutant out."""
    import logging

    if memory_mb > 0:  # a huge allocation fails (MemoryError), not the machine
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # native code printing to stdout cannot garble results
    err, name = tempfile.mkstemp(prefix="fuzz-reader-stderr-")
    os.unlink(name)
    os.dup2(err, 2)  # what would reach the terminal is measured
    warnings.simplefilter("ignore")  # Python warnings/logs are not leaks
    logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    logging.lastResort = None

    import npe2

    from napari_medcnn.io import load

    pm = npe2.PluginManager.instance()
    pm.discover()  # as napari does at start
    pm.get_manifest("napari-medcnn")  # KeyError: the plugin is not installed

    for line in sys.stdin:
        path = json.loads(line)["path"]
        pos = os.lseek(2, 0, os.SEEK_END)
        res = {"load": _outcome(path, lambda p=path: load(p))}
        res["npe2"] = _outcome(
            path,
            lambda p=path: npe2.read([p], plugin_name="napari-medcnn", stack=False),
        )
        end = os.lseek(2, 0, os.SEEK_END)
        res["stderr"] = os.pread(2, min(end - pos, 400), pos).decode("utf-8", "replace")
        results.write(json.dumps(res) + "\n")


class Worker:
    """One worker subprocess; restarted after a crash or a hang."""

    def __init__(self, memory_mb: int):
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--memory-mb", str(self.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def run(self, path: str, timeout: float) -> dict:
        """Read one mutant; a ``{"status": "crash"|"hang"}`` dict when the
        worker died or overran (it is then restarted on the next call)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self.proc.stdin.write(json.dumps({"path": path}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        if not ready:
            self.stop()
            return {"status": "hang", "message": f"no result after {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            return self._died()
        return json.loads(line)

    def _died(self) -> dict:
        rc = self.proc.wait()
        self.proc = None
        why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        return {"status": "crash", "message": f"worker died ({why})"}


# -- the run -------------------------------------------------------------------------
RANK = {"ok": 0, "error": 1, "unnamed": 2, "hang": 3, "crash": 4}


def classify(res: dict) -> str:
    """The mutant's outcome: ok, error (clean), unnamed, hang or crash."""
    if res.get("status") in ("crash", "hang"):
        return res["status"]
    worst = "ok"
    for part in (res["load"], res["npe2"]):
        s = part["status"]
        if s == "error" and not part["names_file"]:
            s = "unnamed"
        worst = max(worst, s, key=RANK.__getitem__)
    return worst


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    paths = find_seeds(args.max_seed_bytes, args.match)
    if not paths:
        raise SystemExit("no seed files found (is pydicom installed?)")
    seeds = [load_seed(p) for p in paths]
    keep = Path(args.keep or tempfile.mkdtemp(prefix="fuzz-reader-keep-"))
    keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fuzz-reader-"))
    indices = [args.only] if args.only is not None else list(range(args.n))
    todo: queue.Queue[int] = queue.Queue()
    for i in indices:
        todo.put(i)
    counts: Counter[str] = Counter()
    error_types: Counter[str] = Counter()
    by_mutation: dict[str, Counter[str]] = {}
    leaks: list[dict] = []
    bad: list[dict] = []
    lock = threading.Lock()
    done = [0]

    def serve() -> None:
        worker = Worker(args.memory_mb)
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                seed, data, kind = make_mutant(seeds, args.seed, i)
                path = work / f"m{i:06d}.dcm"
                path.write_bytes(data)
                res = worker.run(str(path), args.timeout)
                outcome = classify(res)
                with lock:
                    for reader in ("load", "npe2"):
                        part = res.get(reader, {})
                        if part.get("status") == "error":
                            error_types[f"{reader}: {part['type']}"] += 1
                    if "decoder panicked" in res.get("load", {}).get("message", ""):
                        counts["panic_caught"] += 1
                    counts[outcome] += 1
                    by_mutation.setdefault(kind, Counter())[outcome] += 1
                    info = {"mutant": i, "seed": seed.name, "mutation": kind}
                    if res.get("stderr"):
                        leaks.append(info | {"stderr": res["stderr"][:200]})
                    if outcome in ("crash", "hang", "unnamed"):
                        kept = keep / f"{outcome}-m{i:06d}-{seed.name}"
                        shutil.copy(path, kept)
                        bad.append(info | {"outcome": outcome, "kept": str(kept),
                                           "result": res})  # fmt: skip
                    done[0] += 1
                    if args.progress and done[0] % args.progress == 0:
                        print(f"{done[0]}/{len(indices)} {dict(counts)}",
                              file=sys.stderr, flush=True)  # fmt: skip
                path.unlink()
        finally:
            worker.stop()

    threads = [threading.Thread(target=serve) for _ in range(max(1, args.workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sum(counts[k] for k in RANK) != len(indices):  # a serving thread failed
        raise SystemExit(f"only {sum(counts.values())} of {len(indices)} mutants ran")
    shutil.rmtree(work, ignore_errors=True)
    if not bad:
        shutil.rmtree(keep, ignore_errors=True)
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": args.seed,
        "seed_files": len(seeds),
        "max_seed_bytes": args.max_seed_bytes,
        "mutants": len(indices),
        "ok": counts["ok"],
        "clean_errors": counts["error"],
        "crashes": counts["crash"],
        "hangs": counts["hang"],
        "unnamed_errors": counts["unnamed"],
        "stderr_leaks": len(leaks),
        "decoder_panics_caught": counts["panic_caught"],
        "by_mutation": {k: dict(v) for k, v in sorted(by_mutation.items())},
        "error_types": dict(error_types.most_common()),
        "seconds": round(time.perf_counter() - t0, 1),
        "failures": bad[:50],
        "leak_examples": leaks[:10],
        "kept_in": str(keep) if bad else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=1000, help="mutants (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds per mutant before it counts as a hang")  # fmt: skip
    p.add_argument("--max-seed-bytes", type=int, default=1_000_000)
    p.add_argument("--memory-mb", type=int, default=3072,
                   help="address-space limit of a worker (0: none)")  # fmt: skip
    p.add_argument("--match", default="", help="only seeds whose name has this")
    p.add_argument("--only", type=int, help="remake and read mutant I only")
    p.add_argument("--keep", help="folder for crashing/hanging mutants")
    p.add_argument("--json", help="also write the summary to this file")
    p.add_argument("--progress", type=int, default=0, help="report every N mutants")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.memory_mb)
        return 0
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    failed = summary["crashes"] + summary["hangs"] + summary["unnamed_errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
