"""Run a stage's ``main`` so that a user's mistake is one line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from agedistill.config import ParamsError
from agedistill.data.splits import SplitError
from agedistill.models.errors import ModelFileError

USER_ERRORS = (ParamsError, SplitError, ModelFileError, FileNotFoundError, ValueError)


def stage_main(name: str, main: Callable[[], None]) -> None:
    """Call ``main``; on a user error print ``<name>: error: <message>`` and exit with status 2."""
    try:
        main()
    except USER_ERRORS as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
