"""The journal of a cohort run: the single source of truth for resuming.

An append-only JSON-lines file (``journal.jsonl`` in the output folder,
mode 0600).  Each finished item is one line, ``{"task": ..., "row": {...}}``,
written with a single ``write`` on a file opened with ``O_APPEND`` and then
``fsync``-ed, so a line is either wholly there or (after a crash in the
middle of the write) a torn tail that :meth:`Journal.entries` ignores and
the next :meth:`Journal.append` cuts off.  A run killed with SIGKILL thus
loses at most the items that were in flight.

``task`` identifies what was asked (the model id and the options that
change a row: scope, explain method, de-identification); a rerun with the
same task skips every key already journalled as ``ok`` or ``skipped``, and
also ``error`` unless errors are to be redone.  The latest line of a key
wins, so a redone item replaces its error row in the results.

Rows hold no patient data by construction (see ``task.py``); the journal
is the rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Journal", "JOURNAL_NAME"]

JOURNAL_NAME = "journal.jsonl"


class Journal:
    """Append-only store of finished rows (see module doc).

    Args:
        path: the ``.jsonl`` file (created on the first append).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    # -- reading ------------------------------------------------------------
    def entries(self) -> Iterator[dict[str, Any]]:
        """Every complete entry, oldest first (a torn last line is skipped)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:  # a torn tail after a crash
                continue
            if isinstance(entry, dict) and isinstance(entry.get("row"), dict):
                yield entry

    def latest(self, task: str) -> dict[str, dict[str, Any]]:
        """key -> the latest row journalled for ``task``."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            if entry.get("task") == task:
                row = entry["row"]
                out[str(row.get("key"))] = row
        return out

    def done(self, task: str, *, redo_errors: bool = False) -> set[str]:
        """Keys that need no work for ``task`` (``ok``/``skipped``, and
        ``error`` unless ``redo_errors``)."""
        finished = {"ok", "skipped"} if redo_errors else {"ok", "skipped", "error"}
        return {
            k for k, row in self.latest(task).items() if row.get("status") in finished
        }

    # -- writing ------------------------------------------------------------
    def open(self) -> None:
        """Open for appending; cut a torn last line left by a crash."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                keep = size - len(tail) + cut + 1 if cut >= 0 else 0
                os.ftruncate(fd, keep)
        self._fd = fd

    def append(self, task: str, row: dict[str, Any]) -> None:
        """Write one finished row durably (one write, then fsync)."""
        self.open()
        line = json.dumps({"task": task, "row": row}, separators=(",", ":"))
        data = (line + "\n").encode("utf-8")
        assert self._fd is not None
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: do not leave a torn line
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
