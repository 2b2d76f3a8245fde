"""Peak resident memory of this process, resettable so that each job or phase gets its own."""

import resource
from pathlib import Path


def reset_peak_rss() -> None:
    try:  # Linux: writing 5 resets this process's peak RSS (VmHWM); elsewhere the peak stays
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
