"""scripts/stage_times.py: stage wall times from a time-stamped pipeline log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stage_times.py"
spec = importlib.util.spec_from_file_location("stage_times", SCRIPT)
stage_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_times)

LOG = """\
23:58:00 start
23:58:10 Running stage 'inventory@0':
23:58:20 Running stage 'inventory@1':
23:58:30 Running stage 'align':
23:59:59 align: 10 processed
00:01:30 Running stage 'split':
00:02:00 Running stage 'distill':
00:05:00 distill epoch 1: ...
00:10:00 end
"""


def test_each_stage_runs_to_the_next_and_midnight_is_crossed():
    times = stage_times.stage_times(LOG.splitlines(), [])
    assert times == {"inventory": 20, "align": 180, "split": 30, "distill": 480}


def test_a_pause_is_taken_off_the_stage_it_falls_in():
    times = stage_times.stage_times(LOG.splitlines(), [("00:03:00", "00:04:00")])
    assert times["distill"] == 420 and times["align"] == 180


def test_a_log_without_stages_is_an_error():
    with pytest.raises(ValueError, match="no 'Running stage'"):
        stage_times.stage_times(["12:00:00 hello"], [])
