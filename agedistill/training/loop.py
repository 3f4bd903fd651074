"""The epoch loop the three trainings share: seeded batches, validation, best model, resume."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from agedistill.config import TrainParams
from agedistill.data.augment import augment, augment_views, batches
from agedistill.models.files import save_model
from agedistill.training.averaging import WeightAverage
from agedistill.training.checkpoints import TrainState
from agedistill.training.distributed import (
    SINGLE,
    Context,
    average_gradients,
    broadcast_modules,
    shard,
    weighted_mean,
)
from agedistill.training.precision import autocast, check_precision, to_memory_format

LossFn = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


def train_one_epoch(
    modules: Iterable[nn.Module],
    loss_fn: LossFn,
    batches: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Run ``loss_fn`` over ``batches`` with one optimiser step each; return mean logged values.

    ``loss_fn(batch)`` returns the loss to minimise and a dict of floats to average (it owns the
    forward pass, so the same engine serves cross-entropy, permutation and distillation losses).
    ``after_backward`` runs between ``backward`` and the step (data-parallel gradient averaging),
    ``after_step`` after each step (a moving average of the weights).
    """
    for m in modules:
        m.train()
    sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        loss, logs = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()}: lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


EpochLogger = Callable[[dict[str, float], int], None]


StepCheck = Callable[[str, int], bool]


def _corruptions(opt: TrainParams) -> dict[str, float]:
    return {"grayscale": opt.grayscale, "scan": opt.scan, "blur": opt.blur, "jpeg": opt.jpeg,
            "low_res": opt.low_res, "crop_context": opt.crop_context}  # fmt: skip


def augment_batch(
    opt: TrainParams, images: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``opt``'s augmentation of a uint8 batch (:func:`~agedistill.data.augment.augment`)."""
    return augment(images, opt.max_shift, opt.flip, generator, rotate=opt.rotate,
                   scale=opt.scale, color=opt.color, **_corruptions(opt))  # fmt: skip


def augment_batch_views(
    opt: TrainParams, images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment_batch`, and the same faces without the corruptions
    (:func:`~agedistill.data.augment.augment_views`)."""
    return augment_views(images, opt.max_shift, opt.flip, generator, rotate=opt.rotate,
                         scale=opt.scale, color=opt.color, **_corruptions(opt))  # fmt: skip


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed torch and numpy (model initialisation) and fix the thread count."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if threads:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class EpochRandom:
    """The random streams of one epoch, derived from (seed, epoch, rank) alone.

    ``order`` (batch order) and ``np`` (sequence sampling) are the same on every rank; ``aug``
    (augmentation) and torch's global generator (dropout) differ per rank. Deriving them per epoch
    is what lets a resumed run draw exactly what an uninterrupted one would.
    """

    order: torch.Generator
    aug: torch.Generator
    np: np.random.Generator


def _seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def epoch_random(seed: int, epoch: int, rank: int = 0) -> EpochRandom:
    """Seed this epoch's streams (and torch's global generator, for dropout)."""
    torch.manual_seed(_seed(seed, epoch, 3, rank))
    return EpochRandom(
        order=torch.Generator().manual_seed(_seed(seed, epoch, 0)),
        aug=torch.Generator().manual_seed(_seed(seed, epoch, 1, rank)),
        np=np.random.default_rng(_seed(seed, epoch, 2)),
    )


# a run of fewer optimiser steps trains at a constant learning rate: OneCycleLR has no room for its
# warm-up (at exactly 4 steps it divides by zero)
MIN_ONE_CYCLE_STEPS = 5


def _optimizer(params, opt: TrainParams, steps_per_epoch: int):
    optimizer = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    total = max(1, opt.epochs * steps_per_epoch)
    if total < MIN_ONE_CYCLE_STEPS:
        return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=opt.lr, total_steps=total, pct_start=0.25
    )
    return optimizer, scheduler


@dataclass
class TrainingSetup:
    """Where a training run writes and how it is spread: the context of one stage execution."""

    out: Path
    ctx: Context = SINGLE
    state: TrainState | None = None  # per-epoch checkpoints to resume from
    log: EpochLogger | None = None
    mlflow_run_id: str | None = None
    has_logged: StepCheck | None = None  # (metric, step) -> already in the MLflow run?


def as_setup(out: str | Path | TrainingSetup, log: EpochLogger | None) -> TrainingSetup:
    return out if isinstance(out, TrainingSetup) else TrainingSetup(Path(out), log=log)


def _global_batches(
    n: int, opt: TrainParams, rand: EpochRandom, ctx: Context
) -> Iterator[torch.Tensor]:
    # the same order on every rank; a batch too small to give every rank a sample is skipped
    for idx in batches(n, opt.batch_size, True, rand.order):
        if len(idx) >= ctx.world:
            yield shard(idx, ctx)


def fit(
    modules: list[nn.Module],
    loss_fn: Callable[[torch.Tensor, EpochRandom], tuple[torch.Tensor, dict[str, float]]],
    n_train: int,
    opt: TrainParams,
    run: TrainingSetup,
    *,
    validate: Callable[[torch.Tensor], dict[str, float]],
    n_val: int,
    select: str,
    lower_is_better: bool,
    best_model: tuple[nn.Module, dict[str, Any]],
    desc: str,
    epoch_start: Callable[[EpochRandom], None] | None = None,
) -> dict[str, float]:
    """The epoch loop shared by the three trainings.

    Trains on this rank's shard of every batch with gradients averaged over ranks, validates on a
    shard with metrics reduced over ranks, keeps the best model (by ``select``) in ``run.out`` and,
    with ``run.state``, checkpoints after every epoch and resumes from the last one. With
    ``opt.ema_epochs`` the validated and saved model is the moving average of its weights.
    """
    ctx = run.ctx
    check_precision(opt.precision, ctx.device)
    for m in modules:
        m.to(ctx.device)
    to_memory_format(modules, opt.channels_last)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    steps = math.ceil(n_train / opt.batch_size)
    optimizer, scheduler = _optimizer(params, opt, steps)

    def step(idx: torch.Tensor, rand: EpochRandom) -> tuple[torch.Tensor, dict[str, float]]:
        with autocast(opt.precision, ctx.device):
            return loss_fn(idx, rand)

    average = WeightAverage(best_model[0], opt.ema_epochs * steps) if opt.ema_epochs > 0 else None
    stateful = modules + ([average.average] if average else [])
    done, progress = run.state.restore(stateful, optimizer, scheduler) if run.state else (0, {})
    broadcast_modules(stateful, ctx)
    best, best_epoch = progress.get("best"), progress.get("best_epoch", 0)
    history, elapsed = progress.get("history", {}), progress.get("train_wall_s", 0.0)
    if done and ctx.is_main:
        tqdm.write(f"{desc}: resuming after epoch {done} of {opt.epochs} from {run.state.last}")
        _copy_model(run.state.best, run.out)
        _relog_last_epoch(run, history, done, f"best_{select}")
    start = time.perf_counter() - elapsed
    for epoch in tqdm(range(done + 1, opt.epochs + 1), desc=desc, unit="epoch", initial=done,
                      total=opt.epochs, disable=not ctx.is_main):  # fmt: skip
        rand = epoch_random(opt.seed, epoch, ctx.rank)
        if epoch_start:
            epoch_start(rand)
        train_logs = train_one_epoch(
            modules, lambda idx, r=rand: step(idx, r), _global_batches(n_train, opt, rand, ctx),
            optimizer, scheduler, after_backward=lambda: average_gradients(params, ctx),
            after_step=average.update if average else None,
        )  # fmt: skip
        train_logs = weighted_mean(train_logs, 1.0, ctx)
        broadcast_modules(stateful, ctx)  # rank 0's BatchNorm statistics everywhere
        val_idx = shard(torch.arange(n_val), ctx)
        with average.applied() if average else nullcontext():
            val = weighted_mean(validate(val_idx), float(len(val_idx)), ctx)
            value = val[select]
            if best is None or (value < best if lower_is_better else value > best):
                best, best_epoch = value, epoch
                if ctx.is_main:
                    save_model(run.out, *best_model)
                    if run.state:
                        _copy_model(run.out, run.state.best)
        metrics = {**{f"train_{k}": v for k, v in train_logs.items()}, **val}
        metrics[f"best_{select}"] = best
        history = metrics
        progress = {"best": best, "best_epoch": best_epoch, "history": history,
                    "train_wall_s": time.perf_counter() - start}  # fmt: skip
        if ctx.is_main:
            if run.state:
                run.state.save(epoch, stateful, optimizer, scheduler, progress, run.mlflow_run_id)
            tqdm.write(
                f"{desc} epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )
            if run.log:
                run.log(metrics, epoch)
    if run.state and ctx.is_main:
        run.state.clear()
    return {**history, "best_epoch": best_epoch, "train_wall_s": time.perf_counter() - start}


def _relog_last_epoch(run: TrainingSetup, history: dict[str, float], epoch: int, key: str) -> None:
    """Log the checkpointed epoch's metrics again if a kill came between checkpoint and log.

    Each epoch is checkpointed first and logged second, so a run killed between the two resumes
    after an epoch its MLflow run never saw; logging it here (only when missing, so never twice)
    keeps the run's per-epoch history free of gaps and duplicates.
    """
    if run.log and history and run.has_logged and not run.has_logged(key, epoch):
        run.log(history, epoch)


def _copy_model(src: Path, dst: Path) -> None:
    """Copy a model file and its JSON sidecar."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".pt", ".json"):
        shutil.copyfile(src.with_suffix(suffix), dst.with_suffix(suffix))
