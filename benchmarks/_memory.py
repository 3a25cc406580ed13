"""Peak-memory helpers shared by the benchmark scripts (Linux /proc).

Each benchmark runs a method in a fresh process, resets the resident-set
high-water mark (VmHWM) to the current RSS right before the run and reads
it after: peak growth = VmHWM - RSS before, in bytes.
"""

from __future__ import annotations


def status_bytes(key: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS.

    Returns False where ``/proc/self/clear_refs`` is not writable (the peak
    then includes everything before, an over-estimate).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
