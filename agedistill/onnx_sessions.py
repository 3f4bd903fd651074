"""ONNX Runtime sessions: one per file and process, with the thread count the process asked for.

An ONNX Runtime session does not survive ``fork``, so every process opens its own on first use
(``predict``'s and the ``align`` stage's worker processes each do). Importing this module imports
neither torch nor onnxruntime; the first session does the latter.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SESSIONS: dict[tuple[str, int, int], Any] = {}  # (file, process id, threads) -> session
_threads = 1  # intra-op threads of the sessions opened from now on in this process


def session(path: str | Path, threads: int | None = None) -> Any:
    """This process's ONNX Runtime session of ``path`` (opened on first use, CPU only), with
    ``threads`` intra-op threads (default: the process's setting, :func:`set_threads`)."""
    threads = threads or _threads
    key = (str(path), os.getpid(), threads)
    if key not in _SESSIONS:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        _SESSIONS[key] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def opened(path: str | Path) -> Any:
    """A one-thread session of ``path``, to check the file and read its metadata before any work
    (and before worker processes fork: one thread leaves no thread pool behind in the parent).
    Raises what ONNX Runtime raises for a file it cannot load."""
    return session(path, threads=1)


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads (0: leave as it is) in ONNX Runtime sessions opened from now
    on, and in torch if this process has imported it."""
    global _threads
    if n > 0:
        _threads = n
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)


@contextmanager
def compute_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` compute threads (0: unchanged; see :func:`set_threads`), then
    restore ONNX Runtime's and torch's settings."""
    torch = sys.modules.get("torch")
    before = _threads, (torch.get_num_threads() if torch is not None else None)
    set_threads(n)
    try:
        yield
    finally:
        set_threads(before[0])
        if torch is not None and before[1] is not None:
            torch.set_num_threads(before[1])
