"""The peak memory of this process (``bench perf``, and the drawing process of :mod:`reports.drawing`). A leaf."""

from __future__ import annotations

try:
    import resource
except ImportError:  # Windows: no resource module (the drawing process imports this on every platform)
    resource = None  # type: ignore[assignment]


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process' own memory
    (``ru_maxrss`` survives ``exec``, so a spawned child would report its parent's peak);
    elsewhere ``ru_maxrss`` in KiB.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if resource is None:
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
