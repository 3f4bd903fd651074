"""What a measurement ran on: the CPU's name and bfloat16 instruction sets, torch and Python.

Training results and timings depend on the CPU model (MTCNN's float arithmetic, bfloat16
support), so benchmarks record :func:`describe` and MLflow runs carry it as tags.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and its bfloat16 instruction sets (read from ``cpuinfo`` on Linux).

    Elsewhere, or where the file cannot be read, ``platform.processor()`` (or the machine type).
    """
    fallback = platform.processor() or platform.machine() or "unknown"
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return fallback
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    bf16 = sorted(f for f in flags if f in BF16_FLAGS)
    name = name or fallback
    return f"{name} ({', '.join(bf16) or 'no bf16 instructions'})"


def describe() -> dict[str, str]:
    """The machine a measurement ran on, as strings (fit for JSON and MLflow tags)."""
    return {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
