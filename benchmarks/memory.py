"""Peak memory of a process and all its children (DataLoader workers, torchrun ranks), sampled.

``ru_maxrss`` sees one process only; forked workers share pages with their parent, so summing
their RSS counts shared pages twice. This samples the whole tree and keeps both the summed RSS
and the summed PSS (each shared page split between the processes that map it): PSS is the
memory the job really holds.
"""

from __future__ import annotations

import threading
import time

import psutil


class PeakMemory:
    """``with PeakMemory(pid) as m: ...`` then ``m.peak_rss_mb`` and ``m.peak_pss_mb``."""

    def __init__(self, pid: int | None = None, interval: float = 0.25) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Add one sample of the tree's summed RSS and PSS."""
        rss = pss = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
        self.peak_pss_mb = max(self.peak_pss_mb, pss / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
