"""The three training recipes: ranking teacher, classification teacher, distilled student.

Each takes explicit values (tables, configs, a tracker) and returns its final metrics; the stage
scripts only parse params and paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agedistill.config import (
    AgeLossParams,
    AgesParams,
    DistillParams,
    ModelParams,
    RankTeacherParams,
    TrainParams,
)
from agedistill.data.augment import mix_pairs
from agedistill.data.tables import FaceTable
from agedistill.faces.detection import CROP_DEFAULTS
from agedistill.models.files import build_model
from agedistill.models.inputs import normalize, resize_faces
from agedistill.models.nets import HintAdapter, count_parameters
from agedistill.models.ordinal import SequenceSampler, permutations, shuffle_sequences
from agedistill.models.predictions import age_mae
from agedistill.training.loop import (
    EpochLogger,
    EpochRandom,
    TrainingSetup,
    as_setup,
    augment_batch,
    fit,
    seed_everything,
)
from agedistill.training.losses import age_loss, hint_loss, kd_loss, mixed_age_loss
from agedistill.training.precision import to_memory_format


def _arch_config(model: ModelParams) -> dict[str, Any]:
    """The ``ModelParams`` keys a model file records, as plain types."""
    keys = ("stem_stride", "depthwise", "dropout", "input_size")
    return {"widths": list(model.widths), **{k: getattr(model, k) for k in keys}}


def convnet_config(
    model: ModelParams, ages: AgesParams, crop: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Model config (for the model file) of a student-shaped network.

    ``crop`` (margin, template, detect_pad) records how faces were found and aligned, as
    ``align_<key>``, so ``predict`` finds and crops faces in photos the same way.
    """
    return {
        "arch": "convnet",
        **_arch_config(model),
        "num_classes": ages.num_classes,
        "min_age": ages.min_age,
        **{f"align_{k}": v for k, v in {**CROP_DEFAULTS, **(crop or {})}.items()},
    }


def train_classifier(
    train: FaceTable,
    val: FaceTable,
    model: ModelParams,
    opt: TrainParams,
    ages: AgesParams,
    *,
    out: str | Path | TrainingSetup,
    loss: AgeLossParams | None = None,
    crop: dict[str, Any] | None = None,
    log: EpochLogger | None = None,
) -> dict[str, float]:
    """Train a student-shaped network on the ground truth; save the best (val MAE) to ``out``.

    The loss is :func:`~agedistill.training.losses.age_loss` with ``loss``'s settings. ``out``
    is a model path, or a :class:`TrainingSetup` (data-parallel context, checkpoints, logger).
    ``crop`` (``AlignParams.crop_settings()``) is recorded in the model file for ``predict``.
    """
    run = as_setup(out, log)
    loss = loss or AgeLossParams()  # plain cross-entropy
    seed_everything(opt.seed, opt.threads)
    config = convnet_config(model, ages, crop)
    net = build_model(config)
    min_age = ages.min_age
    labels = train.labels(min_age)
    dev = run.ctx.device

    def loss_fn(idx, rand):
        x = normalize(augment_batch(opt, train.images[idx], rand.aug)).to(dev)
        value = age_loss(net(x), labels[idx].to(dev), loss.label_sigma, loss.mae_weight)
        return value, {"loss": value.item()}

    result = fit(
        [net], loss_fn, len(train), opt, run,
        validate=lambda vi: {"val_mae": age_mae(net, val.images[vi], val.ages[vi], min_age)},
        n_val=len(val), select="val_mae", lower_is_better=True, best_model=(net, config),
        desc="class_teacher",
    )  # fmt: skip
    return {**result, "params": count_parameters(net)}


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
    params: RankTeacherParams,
    *,
    out: str | Path | TrainingSetup,
    log: EpochLogger | None = None,
) -> dict[str, float]:
    """Train the ranking teacher to recover the age order of K shuffled faces."""
    run = as_setup(out, log)
    opt, k, min_gap, sampling = params.train, params.k, params.min_gap, params.sampling
    sequences_per_epoch = params.sequences_per_epoch
    seed_everything(opt.seed, opt.threads)
    config = {
        "arch": "rank_teacher",
        **_arch_config(params.model),
        "k": k,
        "feature_dim": params.feature_dim,
    }
    model = build_model(config)
    dev = run.ctx.device
    sampler = SequenceSampler(train.ages.numpy(), k, min_gap, sampling)
    val_sampler = SequenceSampler(val.ages.numpy(), k, min_gap, sampling)
    val_seqs, val_target = shuffle_sequences(
        torch.from_numpy(
            val_sampler.sample(params.val_sequences, np.random.default_rng(opt.seed + 1))
        ),
        torch.Generator().manual_seed(opt.seed + 1),
    )
    epoch_seqs: dict[str, torch.Tensor] = {}

    def new_sequences(rand: EpochRandom) -> None:  # fresh sequences every epoch
        epoch_seqs["seqs"] = torch.from_numpy(sampler.sample(sequences_per_epoch, rand.np))

    def loss_fn(idx, rand):
        seqs, target = shuffle_sequences(epoch_seqs["seqs"][idx], rand.aug)  # (B, K), (B,)
        faces = augment_batch(opt, train.images[seqs.flatten()], rand.aug)
        x = normalize(faces).view(*seqs.shape, *faces.shape[1:]).to(dev)  # (B, K, 3, H, W)
        logits = model(x)
        target = target.to(dev)
        loss = nn.functional.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean().item()
        return loss, {"loss": loss.item(), "order_acc": acc}

    result = fit(
        [model], loss_fn, sequences_per_epoch, opt, run,
        validate=lambda vi: order_metrics(model, val.images, val_seqs[vi], val_target[vi]),
        n_val=len(val_seqs), select="val_kendall_tau", lower_is_better=False,
        best_model=(model, config), desc="rank_teacher", epoch_start=new_sequences,
    )  # fmt: skip
    return {**result, "params": count_parameters(model)}


@dataclass(frozen=True)
class Teachers:
    """The two frozen teachers :func:`train_student` distils, and how it reads the ranking one."""

    classifier: nn.Module  # the class teacher: soft targets
    ranker: nn.Module  # the ranking teacher: hinted feature maps
    hint_stage: int  # the ranker's stage the student's hint matches (rank_teacher.hint_stage)
    input_size: int | None = None  # the ranker's input side, when it differs from the student's


def train_student(
    train: FaceTable,
    val: FaceTable,
    model: ModelParams,
    params: DistillParams,
    ages: AgesParams,
    teachers: Teachers,
    *,
    out: str | Path | TrainingSetup,
    loss: AgeLossParams | None = None,
    crop: dict[str, Any] | None = None,
    log: EpochLogger | None = None,
) -> dict[str, float]:
    """Distil: ground truth + soft targets of the class teacher + hints of the rank teacher.

    ``teachers.input_size``: the ranking teacher's input side when it differs from the student's
    (its model file's ``input_size``); it then reads each batch resized to that side
    (:func:`~agedistill.models.inputs.resize_faces`), and its hinted map must have the student's
    side.

    The ground-truth term is :func:`~agedistill.training.losses.age_loss`, as for the class
    teacher. ``params.mixup`` > 0 trains on blends of face pairs
    (:func:`~agedistill.data.augment.mix_pairs`): the teachers read the same blend, and the
    ground-truth term is blended with the same weight.
    """
    opt, temperature, mixup = params.train, params.temperature, params.mixup
    gt_weight, kd_weight, hint_weight = params.gt_weight, params.kd_weight, params.hint_weight
    student_hint_stage, teacher_hint_stage = params.hint_stage, teachers.hint_stage
    class_teacher, rank_teacher = teachers.classifier, teachers.ranker
    loss = loss or AgeLossParams()  # plain cross-entropy
    label_sigma, mae_weight, min_age = loss.label_sigma, loss.mae_weight, ages.min_age
    run = as_setup(out, log)
    seed_everything(opt.seed, opt.threads)
    config = convnet_config(model, ages, crop)
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
    t_size = teachers.input_size or s_size
    if hint_weight > 0:
        _check_hint_maps(student, rank_teacher, s_size, t_size, student_hint_stage,
                         teacher_hint_stage)  # fmt: skip
    labels = train.labels(min_age)

    def loss_fn(idx, rand):
        x = normalize(augment_batch(opt, train.images[idx], rand.aug)).to(dev)
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
    result = fit(
        modules, loss_fn, len(train), opt, run,
        validate=lambda vi: {"val_mae": age_mae(student, val.images[vi], val.ages[vi], min_age)},
        n_val=len(val), select="val_mae", lower_is_better=True, best_model=(student, config),
        desc="distill",
    )  # fmt: skip
    return {**result, "params": count_parameters(student)}
