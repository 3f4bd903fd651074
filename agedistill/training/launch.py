"""``python -m agedistill.training.launch MODULE [ARGS...]``: run a training stage on
``distributed.nproc`` processes.

With ``nproc: 1`` the stage runs in this process. Otherwise it is started by ``torchrun
--standalone`` (PyTorch's own launcher: one machine, a free rendezvous port), which sets the rank
variables that :func:`agedistill.training.distributed.setup` reads.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

from agedistill.config import ParamsError, load_params


def torchrun_command(module: str, args: list[str], nproc: int) -> list[str]:
    """The torchrun command line that starts ``module`` on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", module, *args]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run ``argv[0]`` (a module) with the rest as its arguments; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m agedistill.training.launch MODULE [ARGS...]", file=sys.stderr)
        return 2
    module, args = argv[0], argv[1:]
    try:
        nproc = load_params().distributed.nproc
    except ParamsError as e:
        print(f"{module}: error: {e}", file=sys.stderr)
        return 2
    if nproc == 1 or "WORLD_SIZE" in os.environ:
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 0
    return subprocess.call(torchrun_command(module, args, nproc))


if __name__ == "__main__":
    raise SystemExit(main())
