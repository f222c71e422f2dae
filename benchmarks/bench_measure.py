"""Wall time and peak memory (process RSS, CUDA) of benchmark stages; used by ``bench.py``."""

from __future__ import annotations

import resource
import time

import torch


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5). False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:  # no /proc: the lifetime peak from getrusage (KiB on Linux)
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return (kib or 0) * 1024


class Timer:
    """Runs stages one after the other and records wall time and peak memory of each."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.can_reset = reset_peak_rss()
        self.process_peak = peak_rss_bytes()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def run(self, record: dict, name: str, fn, *args, **kwargs):
        self.sync()
        self.process_peak = max(self.process_peak, peak_rss_bytes())
        if self.can_reset:
            reset_peak_rss()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.sync()
        dt = time.perf_counter() - t0
        peak = peak_rss_bytes()
        self.process_peak = max(self.process_peak, peak)
        record[name] = {"seconds": dt, "peak_rss": peak}
        if self.cuda:
            record[name]["cuda_peak"] = int(torch.cuda.max_memory_allocated(self.device))
        return out
