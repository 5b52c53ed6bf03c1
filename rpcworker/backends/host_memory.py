"""The worker process's memory, as status reports it for a backend on the CPU."""

from __future__ import annotations

from ..wire.messages import MemoryInfo

PAGE_BYTES = 4096


def process_memory() -> MemoryInfo:
    """Resident, peak and total memory of this process and machine (zeros where /proc cannot be read)."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * PAGE_BYTES
    except OSError:
        rss = 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1]) * 1024
    except OSError:
        total = 0
    return MemoryInfo("cpu", rss, rss, peak, total)
