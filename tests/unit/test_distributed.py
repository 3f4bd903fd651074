"""Single-process behaviour of the data-parallel helpers and the stage launcher."""

from __future__ import annotations

import sys

import pytest
import torch

from agedistill.training.distributed import SINGLE, Context, setup, shard, weighted_mean
from agedistill.training.launch import main as launch
from agedistill.training.launch import torchrun_command


def test_shards_of_a_batch_partition_it():
    idx = torch.arange(10)
    parts = [shard(idx, Context(rank=r, world=3)) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert torch.equal(shard(idx, SINGLE), idx)


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup("gloo")
    assert (ctx.rank, ctx.world, ctx.is_main, ctx.device.type) == (0, 1, True, "cpu")
    assert weighted_mean({"a": 2.0}, 5.0, ctx) == {"a": 2.0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_nccl_without_gpus_is_a_clear_error():
    with pytest.raises(ValueError, match="nccl needs CUDA"):
        setup("nccl")


def test_torchrun_command_is_standalone_with_the_module_and_its_args():
    cmd = torchrun_command("stages.distill", ["--model", "m.pt"], 2)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd
    assert cmd[-4:] == ["-m", "stages.distill", "--model", "m.pt"]


def test_launcher_reports_bad_params_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("distributed: {nproc: 0}\n")
    assert launch(["stages.distill"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stages.distill: error: invalid params") and "nproc" in err
