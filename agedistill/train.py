"""The three training procedures: ranking teacher, classification teacher, distilled student.

Each takes explicit values (tables, configs, a tracker) and returns its final metrics; the stage
scripts only parse params and paths.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from agedistill.checkpoint import build_model, save_model
from agedistill.data import FaceTable, augment, batches, normalize
from agedistill.engine import age_mae, train_one_epoch
from agedistill.losses import age_ce_loss, hint_loss, kd_loss
from agedistill.models import HintAdapter, count_parameters
from agedistill.ordinal import SequenceSampler, permutations, shuffle_sequences

EpochLogger = Callable[[dict[str, float], int], None]


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


def seed_everything(seed: int, threads: int = 0) -> torch.Generator:
    """Seed torch and numpy; fix the thread count; return a torch generator for batches."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if threads:
        torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)


def _optimizer(params, opt: Optim, steps_per_epoch: int):
    optimizer = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=opt.lr, total_steps=max(1, opt.epochs * steps_per_epoch), pct_start=0.25
    )
    return optimizer, scheduler


def _arch_config(model_params: dict[str, Any]) -> dict[str, Any]:
    """The ``ModelParams`` keys a model file records, as plain types."""
    keys = ("stem_stride", "depthwise", "dropout", "input_size")
    return {"widths": list(model_params["widths"]), **{k: model_params[k] for k in keys}}


def convnet_config(
    model_params: dict[str, Any], num_classes: int, min_age: int, align_margin: float = 0.0
) -> dict[str, Any]:
    """Model config (for the model file) of a student-shaped network.

    ``align_margin`` records how faces were aligned, so ``predict`` crops photos the same way.
    """
    return {
        "arch": "convnet",
        **_arch_config(model_params),
        "num_classes": num_classes,
        "min_age": min_age,
        "align_margin": align_margin,
    }


def _fit(
    modules: list[nn.Module],
    loss_fn: Callable,
    n_train: int,
    opt: Optim,
    gen: torch.Generator,
    validate: Callable[[], dict[str, float]],
    select: str,
    lower_is_better: bool,
    save_best: Callable[[], None],
    log: EpochLogger | None,
    desc: str,
) -> dict[str, float]:
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    steps = math.ceil(n_train / opt.batch_size)
    optimizer, scheduler = _optimizer(params, opt, steps)
    best, best_epoch, history = None, 0, {}
    start = time.perf_counter()
    for epoch in tqdm(range(1, opt.epochs + 1), desc=desc, unit="epoch"):
        train_logs = train_one_epoch(
            modules, loss_fn, batches(n_train, opt.batch_size, True, gen), optimizer, scheduler
        )
        val = validate()
        metrics = {**{f"train_{k}": v for k, v in train_logs.items()}, **val}
        value = val[select]
        if best is None or (value < best if lower_is_better else value > best):
            best, best_epoch = value, epoch
            save_best()
        metrics[f"best_{select}"] = best
        history = metrics
        tqdm.write(
            f"{desc} epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        )
        if log:
            log(metrics, epoch)
    return {**history, "best_epoch": best_epoch, "train_wall_s": time.perf_counter() - start}


def train_classifier(
    train: FaceTable,
    val: FaceTable,
    model_params: dict[str, Any],
    opt: Optim,
    min_age: int,
    num_classes: int,
    out: str | Path,
    log: EpochLogger | None = None,
    align_margin: float = 0.0,
) -> dict[str, float]:
    """Train a student-shaped network with cross-entropy; save the best (val MAE) to ``out``."""
    gen = seed_everything(opt.seed, opt.threads)
    config = convnet_config(model_params, num_classes, min_age, align_margin)
    model = build_model(config)
    labels = train.labels(min_age)

    def loss_fn(idx):
        x = normalize(augment(train.images[idx], opt.max_shift, opt.flip, gen))
        loss = age_ce_loss(model(x), labels[idx])
        return loss, {"loss": loss.item()}

    result = _fit(
        [model], loss_fn, len(train), opt, gen,
        lambda: {"val_mae": age_mae(model, val.images, val.ages, min_age)},
        "val_mae", True, lambda: save_model(out, model, config), log, "class_teacher",
    )  # fmt: skip
    return {**result, "params": count_parameters(model)}


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
    perms = permutations(seqs.shape[1])
    preds = []
    for i in range(0, len(seqs), 64):
        x = normalize(images[seqs[i : i + 64]].flatten(0, 1)).view(
            *seqs[i : i + 64].shape, *images.shape[1:]
        )
        preds.append(model(x).argmax(-1))
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
    out: str | Path,
    log: EpochLogger | None = None,
) -> dict[str, float]:
    """Train the ranking teacher to recover the age order of K shuffled faces."""
    gen = seed_everything(opt.seed, opt.threads)
    rng = np.random.default_rng(opt.seed)
    config = {
        "arch": "rank_teacher",
        **_arch_config(model_params),
        "k": k,
        "feature_dim": feature_dim,
    }
    model = build_model(config)
    sampler = SequenceSampler(train.ages.numpy(), k, min_gap, sampling)
    val_sampler = SequenceSampler(val.ages.numpy(), k, min_gap, sampling)
    val_seqs, val_target = shuffle_sequences(
        torch.from_numpy(val_sampler.sample(val_sequences, np.random.default_rng(opt.seed + 1))),
        torch.Generator().manual_seed(opt.seed + 1),
    )
    state = {"seqs": None}

    def loss_fn(idx):
        if state["seqs"] is None:
            state["seqs"] = torch.from_numpy(sampler.sample(sequences_per_epoch, rng))
        seqs, target = shuffle_sequences(state["seqs"][idx], gen)  # (B, K), (B,)
        faces = augment(train.images[seqs.flatten()], opt.max_shift, opt.flip, gen)
        x = normalize(faces).view(*seqs.shape, *faces.shape[1:])  # (B, K, 3, H, W)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean().item()
        return loss, {"loss": loss.item(), "order_acc": acc}

    def validate():
        state["seqs"] = None  # fresh sequences every epoch
        return order_metrics(model, val.images, val_seqs, val_target)

    result = _fit(
        [model], loss_fn, sequences_per_epoch, opt, gen, validate, "val_kendall_tau", False,
        lambda: save_model(out, model, config), log, "rank_teacher",
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
    out: str | Path,
    log: EpochLogger | None = None,
    align_margin: float = 0.0,
) -> dict[str, float]:
    """Distil: ground truth + soft targets of the class teacher + hints of the rank teacher."""
    gen = seed_everything(opt.seed, opt.threads)
    config = convnet_config(model_params, num_classes, min_age, align_margin)
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
    for t in (class_teacher, rank_teacher):
        t.eval().requires_grad_(False)
    labels = train.labels(min_age)

    def loss_fn(idx):
        x = normalize(augment(train.images[idx], opt.max_shift, opt.flip, gen))
        emb, maps = student.forward_features(x)
        logits = student.head(student.dropout(emb))
        gt = age_ce_loss(logits, labels[idx])
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
                t_map = rank_teacher.feature_maps(x)[teacher_hint_stage]
            hint = hint_loss(adapter(maps[student_hint_stage]), t_map)
            loss = loss + hint_weight * hint
            logs["hint_loss"] = hint.item()
        logs["loss"] = loss.item()
        return loss, logs

    result = _fit(
        [student, adapter], loss_fn, len(train), opt, gen,
        lambda: {"val_mae": age_mae(student, val.images, val.ages, min_age)},
        "val_mae", True, lambda: save_model(out, student, config), log, "distill",
    )  # fmt: skip
    return {**result, "params": count_parameters(student)}
