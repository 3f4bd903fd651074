"""The three training procedures: ranking teacher, classification teacher, distilled student.

Each takes explicit values (tables, configs, a tracker) and returns its final metrics; the stage
scripts only parse params and paths.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from agedistill.data.augment import FaceTable, augment, batches, mix_pairs, normalize, resize_faces
from agedistill.faces.align import CROP_DEFAULTS
from agedistill.models.files import build_model, save_model
from agedistill.models.nets import HintAdapter, count_parameters
from agedistill.models.ordinal import SequenceSampler, permutations, shuffle_sequences
from agedistill.models.predictions import age_mae, train_one_epoch
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
from agedistill.training.losses import age_loss, hint_loss, kd_loss, mixed_age_loss
from agedistill.training.precision import autocast, check_precision, to_memory_format

EpochLogger = Callable[[dict[str, float], int], None]
StepCheck = Callable[[str, int], bool]


@dataclass(frozen=True)
class Optim:
    """Optimisation settings (a plain copy of ``TrainParams``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    max_shift: int
    flip: bool
    threads: int = 2
    rotate: float = 0.0
    scale: float = 0.0
    color: float = 0.0
    ema_epochs: float = 0.0
    precision: str = "fp32"
    channels_last: bool = False

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """This run's augmentation of a uint8 batch (:func:`~agedistill.data.augment`)."""
        return augment(
            images, self.max_shift, self.flip, generator, self.rotate, self.scale, self.color
        )


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


def _optimizer(params, opt: Optim, steps_per_epoch: int):
    optimizer = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    total = max(1, opt.epochs * steps_per_epoch)
    if total < MIN_ONE_CYCLE_STEPS:
        return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=opt.lr, total_steps=total, pct_start=0.25
    )
    return optimizer, scheduler


def _arch_config(model_params: dict[str, Any]) -> dict[str, Any]:
    """The ``ModelParams`` keys a model file records, as plain types."""
    keys = ("stem_stride", "depthwise", "dropout", "input_size")
    return {"widths": list(model_params["widths"]), **{k: model_params[k] for k in keys}}


def convnet_config(
    model_params: dict[str, Any],
    num_classes: int,
    min_age: int,
    crop: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Model config (for the model file) of a student-shaped network.

    ``crop`` (margin, template, detect_pad) records how faces were found and aligned, as
    ``align_<key>``, so ``predict`` finds and crops faces in photos the same way.
    """
    return {
        "arch": "convnet",
        **_arch_config(model_params),
        "num_classes": num_classes,
        "min_age": min_age,
        **{f"align_{k}": v for k, v in {**CROP_DEFAULTS, **(crop or {})}.items()},
    }


@dataclass
class TrainingSetup:
    """Where a training run writes and how it is spread: the context of one stage execution."""

    out: Path
    ctx: Context = SINGLE
    state: TrainState | None = None  # per-epoch checkpoints to resume from
    log: EpochLogger | None = None
    mlflow_run_id: str | None = None
    has_logged: StepCheck | None = None  # (metric, step) -> already in the MLflow run?


def _as_setup(out: str | Path | TrainingSetup, log: EpochLogger | None) -> TrainingSetup:
    return out if isinstance(out, TrainingSetup) else TrainingSetup(Path(out), log=log)


def _global_batches(n: int, opt: Optim, rand: EpochRandom, ctx: Context) -> Iterator[torch.Tensor]:
    # the same order on every rank; a batch too small to give every rank a sample is skipped
    for idx in batches(n, opt.batch_size, True, rand.order):
        if len(idx) >= ctx.world:
            yield shard(idx, ctx)


def _fit(
    modules: list[nn.Module],
    loss_fn: Callable[[torch.Tensor, EpochRandom], tuple[torch.Tensor, dict[str, float]]],
    n_train: int,
    opt: Optim,
    validate: Callable[[torch.Tensor], dict[str, float]],
    n_val: int,
    select: str,
    lower_is_better: bool,
    best_model: tuple[nn.Module, dict[str, Any]],
    run: TrainingSetup,
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


def train_classifier(
    train: FaceTable,
    val: FaceTable,
    model_params: dict[str, Any],
    opt: Optim,
    min_age: int,
    num_classes: int,
    out: str | Path | TrainingSetup,
    log: EpochLogger | None = None,
    crop: dict[str, Any] | None = None,
    label_sigma: float = 0.0,
    mae_weight: float = 0.0,
) -> dict[str, float]:
    """Train a student-shaped network on the ground truth; save the best (val MAE) to ``out``.

    The loss is :func:`~agedistill.losses.age_loss` (``label_sigma``, ``mae_weight``).
    ``out`` is a model path, or a :class:`TrainingSetup` (data-parallel context, checkpoints,
    logger).
    """
    run = _as_setup(out, log)
    seed_everything(opt.seed, opt.threads)
    config = convnet_config(model_params, num_classes, min_age, crop)
    model = build_model(config)
    labels = train.labels(min_age)
    dev = run.ctx.device

    def loss_fn(idx, rand):
        x = normalize(opt.augment(train.images[idx], rand.aug)).to(dev)
        loss = age_loss(model(x), labels[idx].to(dev), label_sigma, mae_weight)
        return loss, {"loss": loss.item()}

    result = _fit(
        [model], loss_fn, len(train), opt,
        lambda vi: {"val_mae": age_mae(model, val.images[vi], val.ages[vi], min_age)}, len(val),
        "val_mae", True, (model, config), run, "class_teacher",
    )  # fmt: skip
    return {**result, "params": count_parameters(model)}


@torch.no_grad()
def _check_hint_maps(
    student: nn.Module,
    rank_teacher: nn.Module,
    s_size: int,
    t_size: int,
    s_stage: int,
    t_stage: int,
) -> None:
    """Raise a clear error unless the hinted maps of the two networks have the same side.

    Each network reads a blank face on the device its weights are on (the student may not have
    been moved to the training device yet).
    """
    was_training = student.training
    student.eval()
    s_probe = torch.zeros(1, 3, s_size, s_size, device=next(student.parameters()).device)
    s_map = student.forward_features(s_probe)[1][s_stage]
    student.train(was_training)
    t_probe = torch.zeros(1, 3, t_size, t_size, device=next(rank_teacher.parameters()).device)
    t_map = rank_teacher.backbone.forward_features(t_probe)[1][t_stage]
    if s_map.shape[-2:] != t_map.shape[-2:]:
        raise ValueError(
            f"hint: the student's stage {s_stage} map is {tuple(s_map.shape[-2:])} at {s_size} px "
            f"but the ranking teacher's stage {t_stage} map is {tuple(t_map.shape[-2:])} at "
            f"{t_size} px; choose hint stages whose maps have the same side"
        )


def kendall_tau(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Kendall's tau between rank vectors, row by row: (N, K), (N, K) -> (N,).

    >>> kendall_tau(torch.tensor([[0, 1, 2]]), torch.tensor([[2, 1, 0]]))
    tensor([-1.])
    """
    k = pred.shape[1]
    i, j = torch.triu_indices(k, k, offset=1)
    s = torch.sign(pred[:, i] - pred[:, j]) * torch.sign(true[:, i] - true[:, j])
    return s.float().mean(dim=1)


@torch.inference_mode()
def order_metrics(
    model: nn.Module, images: torch.Tensor, seqs: torch.Tensor, target: torch.Tensor
) -> dict[str, float]:
    """Exact-order accuracy and mean Kendall tau of the predicted permutations."""
    model.eval()
    dev = next(model.parameters()).device
    perms = permutations(seqs.shape[1])
    preds = []
    for i in range(0, len(seqs), 64):
        x = normalize(images[seqs[i : i + 64]].flatten(0, 1)).view(
            *seqs[i : i + 64].shape, *images.shape[1:]
        )
        preds.append(model(x.to(dev)).argmax(-1).cpu())
    pred = torch.cat(preds)
    return {
        "val_order_acc": float((pred == target).float().mean()),
        "val_kendall_tau": float(kendall_tau(perms[pred], perms[target]).mean()),
    }


def train_rank_teacher(
    train: FaceTable,
    val: FaceTable,
    model_params: dict[str, Any],
    opt: Optim,
    k: int,
    min_gap: int,
    sampling: str,
    sequences_per_epoch: int,
    val_sequences: int,
    feature_dim: int,
    out: str | Path | TrainingSetup,
    log: EpochLogger | None = None,
) -> dict[str, float]:
    """Train the ranking teacher to recover the age order of K shuffled faces."""
    run = _as_setup(out, log)
    seed_everything(opt.seed, opt.threads)
    config = {
        "arch": "rank_teacher",
        **_arch_config(model_params),
        "k": k,
        "feature_dim": feature_dim,
    }
    model = build_model(config)
    dev = run.ctx.device
    sampler = SequenceSampler(train.ages.numpy(), k, min_gap, sampling)
    val_sampler = SequenceSampler(val.ages.numpy(), k, min_gap, sampling)
    val_seqs, val_target = shuffle_sequences(
        torch.from_numpy(val_sampler.sample(val_sequences, np.random.default_rng(opt.seed + 1))),
        torch.Generator().manual_seed(opt.seed + 1),
    )
    epoch_seqs: dict[str, torch.Tensor] = {}

    def new_sequences(rand: EpochRandom) -> None:  # fresh sequences every epoch
        epoch_seqs["seqs"] = torch.from_numpy(sampler.sample(sequences_per_epoch, rand.np))

    def loss_fn(idx, rand):
        seqs, target = shuffle_sequences(epoch_seqs["seqs"][idx], rand.aug)  # (B, K), (B,)
        faces = opt.augment(train.images[seqs.flatten()], rand.aug)
        x = normalize(faces).view(*seqs.shape, *faces.shape[1:]).to(dev)  # (B, K, 3, H, W)
        logits = model(x)
        target = target.to(dev)
        loss = nn.functional.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean().item()
        return loss, {"loss": loss.item(), "order_acc": acc}

    result = _fit(
        [model], loss_fn, sequences_per_epoch, opt,
        lambda vi: order_metrics(model, val.images, val_seqs[vi], val_target[vi]), len(val_seqs),
        "val_kendall_tau", False, (model, config), run, "rank_teacher", epoch_start=new_sequences,
    )  # fmt: skip
    return {**result, "params": count_parameters(model)}


def train_student(
    train: FaceTable,
    val: FaceTable,
    model_params: dict[str, Any],
    opt: Optim,
    min_age: int,
    num_classes: int,
    class_teacher: nn.Module,
    rank_teacher: nn.Module,
    temperature: float,
    gt_weight: float,
    kd_weight: float,
    hint_weight: float,
    student_hint_stage: int,
    teacher_hint_stage: int,
    out: str | Path | TrainingSetup,
    log: EpochLogger | None = None,
    crop: dict[str, Any] | None = None,
    label_sigma: float = 0.0,
    mae_weight: float = 0.0,
    mixup: float = 0.0,
    rank_input_size: int | None = None,
) -> dict[str, float]:
    """Distil: ground truth + soft targets of the class teacher + hints of the rank teacher.

    ``rank_input_size``: the ranking teacher's input side when it differs from the student's
    (the model file's ``input_size``); it then reads each batch resized to that side
    (:func:`~agedistill.data.resize_faces`), and its hinted map must have the student's side.

    The ground-truth term is :func:`~agedistill.losses.age_loss`, as for the class teacher.
    ``mixup`` > 0 trains on blends of face pairs (:func:`~agedistill.data.mix_pairs`): the
    teachers read the same blend, and the ground-truth term is blended with the same weight.
    """
    run = _as_setup(out, log)
    seed_everything(opt.seed, opt.threads)
    config = convnet_config(model_params, num_classes, min_age, crop)
    student = build_model(config)
    if student_hint_stage >= len(student.widths):
        raise ValueError(
            f"distill.hint_stage={student_hint_stage}: student has {len(student.widths)} stages"
        )
    t_widths = rank_teacher.backbone.widths
    if teacher_hint_stage >= len(t_widths):
        raise ValueError(
            f"rank_teacher.hint_stage={teacher_hint_stage}: teacher has {len(t_widths)} stages"
        )
    adapter = HintAdapter(student.widths[student_hint_stage], t_widths[teacher_hint_stage])
    dev = run.ctx.device
    for t in (class_teacher, rank_teacher):
        t.eval().requires_grad_(False).to(dev)
    to_memory_format([class_teacher, rank_teacher], opt.channels_last)
    s_size = config["input_size"]
    t_size = rank_input_size or s_size
    if hint_weight > 0:
        _check_hint_maps(student, rank_teacher, s_size, t_size, student_hint_stage,
                         teacher_hint_stage)  # fmt: skip
    labels = train.labels(min_age)

    def loss_fn(idx, rand):
        x = normalize(opt.augment(train.images[idx], rand.aug)).to(dev)
        y = labels[idx].to(dev)
        if mixup > 0:
            x, partner, lam = mix_pairs(x, mixup, rand.np, rand.aug)
        emb, maps = student.forward_features(x)
        logits = student.head(student.dropout(emb))
        if mixup > 0:
            gt = mixed_age_loss(logits, y, partner, lam, label_sigma, mae_weight)
        else:
            gt = age_loss(logits, y, label_sigma, mae_weight)
        loss = gt_weight * gt
        logs = {"gt_loss": gt.item()}
        if kd_weight > 0:
            with torch.no_grad():
                t_logits = class_teacher(x)
            kd = kd_loss(logits, t_logits, temperature)
            loss = loss + kd_weight * kd
            logs["kd_loss"] = kd.item()
        if hint_weight > 0:
            with torch.no_grad():
                t_map = rank_teacher.feature_maps(resize_faces(x, t_size))[teacher_hint_stage]
            hint = hint_loss(adapter(maps[student_hint_stage]), t_map)
            loss = loss + hint_weight * hint
            logs["hint_loss"] = hint.item()
        logs["loss"] = loss.item()
        return loss, logs

    # the adapter only learns when hints are on (an unused module would get no gradient)
    modules = [student, adapter] if hint_weight > 0 else [student]
    result = _fit(
        modules, loss_fn, len(train), opt,
        lambda vi: {"val_mae": age_mae(student, val.images[vi], val.ages[vi], min_age)}, len(val),
        "val_mae", True, (student, config), run, "distill",
    )  # fmt: skip
    return {**result, "params": count_parameters(student)}
