"""Determinism and resume of the training loop, on real sample chips (in-process, fast)."""

from __future__ import annotations

import pytest
import torch

from agedistill.config import TrainParams
from agedistill.data.tables import FaceTable
from agedistill.models.files import load_model
from agedistill.training.checkpoints import TrainState, fingerprint
from agedistill.training.loop import TrainingSetup, epoch_random
from agedistill.training.recipes import train_classifier
from tests.chips import chip_table
from tests.params import AGES, model_params, train_params

ARCH = {"widths": [8, 16], "stem_stride": 2, "depthwise": False, "dropout": 0.2, "input_size": 32}
MODEL = model_params(ARCH)
OPT = train_params(4, batch_size=16, seed=3)
# the moving average and the jitter add state and random draws that a resume must restore
JITTER = {"rotate": 10.0, "scale": 0.1, "color": 0.2}
OPT_AVERAGED = OPT.model_copy(update={"ema_epochs": 1.0, **JITTER})


@pytest.fixture(scope="module")
def faces(sample_images) -> FaceTable:
    return chip_table(sample_images, step=10, n=64)


def _weights(path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def _train(faces, run: TrainingSetup, opt: TrainParams = OPT) -> dict[str, float]:
    m = train_classifier(faces, faces, MODEL, opt, AGES, out=run)
    return {k: v for k, v in m.items() if k != "train_wall_s"}


def test_same_seed_gives_bit_identical_metrics_and_weights(faces, tmp_path):
    a = _train(faces, TrainingSetup(tmp_path / "a.pt"))
    b = _train(faces, TrainingSetup(tmp_path / "b.pt"))
    assert a == b  # exact float equality, not approx
    wa, wb = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train_classifier(faces, faces, MODEL, OPT.model_copy(update={"seed": 4}), AGES,
                         out=tmp_path / "c.pt")  # fmt: skip
    assert c["val_mae"] != a["val_mae"]  # the seed matters


class Killed(Exception):
    pass


@pytest.mark.parametrize("opt", [OPT, OPT_AVERAGED], ids=["plain", "averaged"])
def test_interrupted_run_resumes_to_the_same_result(faces, tmp_path, opt):
    reference = _train(faces, TrainingSetup(tmp_path / "ref.pt"), opt)
    state = TrainState(tmp_path / "ckpt", fingerprint("test", opt.__dict__, faces.images))

    def die_after_epoch_2(metrics, epoch):
        if epoch == 2:
            raise Killed  # after epoch 2's state was written, like a kill in epoch 3

    with pytest.raises(Killed):
        _train(faces, TrainingSetup(tmp_path / "out.pt", state=state, log=die_after_epoch_2), opt)
    assert state.load()["epoch"] == 2 and state.best.is_file()
    (tmp_path / "out.pt").unlink()  # DVC deletes a stage's outputs before it reruns it
    epochs = []
    fresh = TrainState(tmp_path / "ckpt", state.fingerprint)
    resumed = _train(
        faces,
        TrainingSetup(tmp_path / "out.pt", state=fresh, log=lambda m, e: epochs.append(e)),
        opt,
    )
    assert epochs == [3, 4]  # lost nothing, repeated nothing
    assert resumed == reference
    wr, wo = _weights(tmp_path / "ref.pt"), _weights(tmp_path / "out.pt")
    assert all(torch.equal(wr[k], wo[k]) for k in wr)
    assert not state.last.exists()  # a finished run leaves no state behind


@pytest.mark.parametrize("logged_before_kill", [False, True], ids=["before-log", "after-log"])
def test_kill_around_the_epoch_log_leaves_each_step_logged_once(faces, tmp_path,
                                                                logged_before_kill):  # fmt: skip
    # a kill between an epoch's checkpoint and its MLflow log, or just after the log
    logged: dict[int, list[dict[str, float]]] = {}

    def log(metrics, epoch):
        logged.setdefault(epoch, []).append(metrics)

    def has_logged(key, epoch):
        return any(key in m for m in logged.get(epoch, []))

    def die_at_epoch_2(metrics, epoch):
        if epoch == 2 and logged_before_kill:
            log(metrics, epoch)
        if epoch == 2:
            raise Killed
        log(metrics, epoch)

    state = TrainState(tmp_path / "ckpt", fingerprint("test", OPT.model_dump(), faces.images))
    with pytest.raises(Killed):
        _train(faces, TrainingSetup(tmp_path / "out.pt", state=state, log=die_at_epoch_2,
                          has_logged=has_logged))  # fmt: skip
    assert sorted(logged) == ([1, 2] if logged_before_kill else [1])
    fresh = TrainState(tmp_path / "ckpt", state.fingerprint)
    _train(faces, TrainingSetup(tmp_path / "out.pt", state=fresh, log=log, has_logged=has_logged))
    assert sorted(logged) == [1, 2, 3, 4]  # no gap
    assert [len(v) for _, v in sorted(logged.items())] == [1, 1, 1, 1]  # no step twice
    assert {"val_mae", "best_val_mae", "train_loss"} <= set(logged[2][0])


def test_state_of_other_params_is_ignored(faces, tmp_path):
    state = TrainState(tmp_path / "ckpt", "aaaa")

    def stop(metrics, epoch):
        raise Killed

    with pytest.raises(Killed):
        _train(faces, TrainingSetup(tmp_path / "x.pt", state=state, log=stop))
    other = TrainState(tmp_path / "ckpt", "bbbb")
    assert other.load() is None and other.mlflow_run_id() is None
    epochs = []
    _train(faces, TrainingSetup(tmp_path / "x.pt", state=other, log=lambda m, e: epochs.append(e)))
    assert epochs == [1, 2, 3, 4]


def test_epoch_streams_depend_on_seed_epoch_and_rank_only():
    a, b = epoch_random(0, 5, 0), epoch_random(0, 5, 0)
    assert torch.equal(torch.randperm(50, generator=a.order), torch.randperm(50, generator=b.order))
    r1 = epoch_random(0, 5, 1)
    # batch order is shared by ranks, augmentation is not
    assert torch.equal(torch.randperm(50, generator=epoch_random(0, 5, 0).order),
                       torch.randperm(50, generator=r1.order))  # fmt: skip
    assert not torch.equal(torch.rand(20, generator=epoch_random(0, 5, 0).aug),
                           torch.rand(20, generator=r1.aug))  # fmt: skip
    assert not torch.equal(torch.rand(20, generator=epoch_random(0, 6, 0).aug),
                           torch.rand(20, generator=epoch_random(0, 5, 0).aug))  # fmt: skip
