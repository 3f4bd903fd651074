"""Wall time of each pipeline stage, read from a time-stamped log of ``dvc repro`` / ``exp run``.

The log is the pipeline's output with ``HH:MM:SS`` in front of every line (as written by
``agedistill exp ... | while read l; do echo "$(date +%T) $l"; done``). A stage's time runs from
its ``Running stage 'NAME'`` line to the next stage's (the last one to the log's last line).
Optional ``--pause START END`` pairs (``HH:MM:SS``) are subtracted from the stage they fall in:
time the run was stopped (SIGSTOP) while something else measured.

    python scripts/stage_times.py full.log --out results/full-v8/stage_wall_s.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agedistill.pipeline.outputs import write_json  # noqa: E402

STAMP = re.compile(r"^(\d\d:\d\d:\d\d) (.*)$")
STAGE = re.compile(r"Running stage '([^']+)'")


def _seconds(clock: str) -> int:
    t = datetime.strptime(clock, "%H:%M:%S")
    return int(timedelta(hours=t.hour, minutes=t.minute, seconds=t.second).total_seconds())


def _on_timeline(start: str, end: str, first: int) -> tuple[int, int]:
    """A pause's clock times as seconds on the log's timeline (a day later if before its start)."""
    a, b = _seconds(start), _seconds(end)
    a += 86400 if a < first else 0
    b += 86400 if b < a else 0
    return a, b


def stage_times(lines: list[str], pauses: list[tuple[str, str]]) -> dict[str, int]:
    """Seconds per stage (inventory stages summed as ``inventory``), pauses subtracted."""
    marks: list[tuple[str, int]] = []
    last, day = None, 0
    for line in lines:
        m = STAMP.match(line)
        if not m:
            continue
        t = _seconds(m.group(1)) + day
        if last is not None and t < last:  # past midnight
            day += 86400
            t += 86400
        last = t
        if s := STAGE.search(m.group(2)):
            marks.append((s.group(1), t))
    if not marks or last is None:
        raise ValueError("no 'Running stage' line with a time stamp in the log")
    ends = [t for _, t in marks[1:]] + [last]
    spans = [_on_timeline(a, b, marks[0][1]) for a, b in pauses]
    out: dict[str, int] = {}
    for (name, start), end in zip(marks, ends, strict=True):
        stopped = sum(max(0, min(end, b) - max(start, a)) for a, b in spans)
        key = "inventory" if name.startswith("inventory@") else name
        out[key] = out.get(key, 0) + end - start - stopped
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--pause", nargs=2, action="append", default=[], metavar=("START", "END"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    times = stage_times(args.log.read_text(errors="replace").splitlines(), args.pause)
    result = {"stage_wall_s": times, "total_wall_s": sum(times.values())}
    if args.out:
        write_json(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
