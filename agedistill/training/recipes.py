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
from agedistill.models.folding import fold_batchnorm
from agedistill.models.inputs import normalize, resize_faces
from agedistill.models.nets import HintAdapter, count_parameters
from agedistill.models.ordinal import SequenceSampler, permutations, shuffle_sequences
from agedistill.models.predictions import age_mae
from agedistill.training.age_balance import age_balance_weights
from agedistill.training.calibration import calibrate_model_file
from agedistill.training.loop import (
    EpochLogger,
    EpochRandom,
    TrainingSetup,
    as_setup,
    augment_batch,
    augment_batch_views,
    fit,
    seed_everything,
)
from agedistill.training.losses import age_loss, hint_loss, kd_loss, mixed_age_loss


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


def classifier_config(
    model: ModelParams, opt: TrainParams, ages: AgesParams, crop: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Model config of the class teacher: the student's net, or a pretrained backbone.

    ``opt`` is ``class_teacher``'s section: its ``backbone`` (``student`` when ``opt`` is a plain
    :class:`TrainParams`) picks the network and its ``input_size`` (0: the student's) the side.
    """
    backbone = getattr(opt, "backbone", "student")
    if backbone == "student":
        return convnet_config(model, ages, crop)
    base = convnet_config(model, ages, crop)
    keep = ("num_classes", "min_age", "dropout")
    return {
        "arch": "pretrained",
        "backbone": backbone,
        "input_size": getattr(opt, "input_size", 0) or model.input_size,
        **{k: base[k] for k in keep},
        **{k: v for k, v in base.items() if k.startswith("align_")},
    }


def _load_pretrained(net: nn.Module, config: dict[str, Any]) -> None:
    """Load the ImageNet weights into a network built from ``config``, if it has a backbone."""
    from agedistill.models.backbones import load_pretrained

    if config["arch"] == "pretrained":
        load_pretrained(net.net)
    elif config["arch"] == "rank_teacher" and config.get("backbone", "convnet") != "convnet":
        load_pretrained(net.backbone.net)


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
    """Train an age classifier on the ground truth; save the best (val MAE) to ``out``.

    The network is the student's (``model``) or, when ``opt`` is ``class_teacher``'s section
    naming a pretrained ``backbone``, that backbone with its ImageNet weights
    (:func:`classifier_config`); ``train`` and ``val`` hold faces at its input side. The saved
    model's ``age_std_scale`` is calibrated on ``val``
    (:func:`~agedistill.training.calibration.calibrate_model_file`). The loss is
    :func:`~agedistill.training.losses.age_loss` with ``loss``'s settings. ``out`` is a model
    path, or a :class:`TrainingSetup` (data-parallel context, checkpoints, logger). ``crop``
    (``AlignParams.crop_settings()``) is recorded in the model file for ``predict``.
    """
    run = as_setup(out, log)
    loss = loss or AgeLossParams()  # plain cross-entropy
    seed_everything(opt.seed, opt.threads)
    config = classifier_config(model, opt, ages, crop)
    net = build_model(config)
    _load_pretrained(net, config)
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
    if run.ctx.is_main:
        result.update(calibrate_model_file(run.out, val))
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
    """Raise a clear error unless the teacher's hinted map is at least the student's side.

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
    if t_map.shape[-1] < s_map.shape[-1] or t_map.shape[-2] < s_map.shape[-2]:
        raise ValueError(
            f"hint: the student's stage {s_stage} map is {tuple(s_map.shape[-2:])} at {s_size} px "
            f"but the ranking teacher's stage {t_stage} map is {tuple(t_map.shape[-2:])} at "
            f"{t_size} px; choose hint stages whose teacher map is at least the student's side"
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
    """Train the ranking teacher to recover the age order of K shuffled faces.

    Its backbone is a conv net trained from scratch or, with ``params.model.backbone`` naming a
    pretrained one, that backbone starting from its ImageNet weights.
    """
    run = as_setup(out, log)
    opt, k, min_gap, sampling = params.train, params.k, params.min_gap, params.sampling
    sequences_per_epoch = params.sequences_per_epoch
    seed_everything(opt.seed, opt.threads)
    config = {
        "arch": "rank_teacher",
        **_arch_config(params.model),
        "backbone": params.model.backbone,
        "k": k,
        "head": params.head,
        "feature_dim": params.feature_dim,
    }
    model = build_model(config)
    _load_pretrained(model, config)
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
    classifier_input_size: int | None = None  # the class teacher's, likewise


_NO_TEACHERS = Teachers(classifier=None, ranker=None, hint_stage=0)  # type: ignore[arg-type]

# The fields of DistillParams the twin trains by (train_student with teachers None); the others
# belong to the teachers' terms and the unlabelled faces, which the twin never reads. The twin
# stage logs these and dvc.yaml lists them as its params.
TWIN_DISTILL_FIELDS: tuple[str, ...] = ("train", "mixup", "gt_weight", "age_balance")


def train_student(
    train: FaceTable,
    val: FaceTable,
    model: ModelParams,
    params: DistillParams,
    ages: AgesParams,
    teachers: Teachers | None,
    *,
    out: str | Path | TrainingSetup,
    loss: AgeLossParams | None = None,
    crop: dict[str, Any] | None = None,
    unlabelled: FaceTable | None = None,
    log: EpochLogger | None = None,
) -> dict[str, float]:
    """Distil: ground truth + soft targets of the class teacher + hints of the rank teacher.

    ``teachers`` None trains the student's no-distillation twin: the same network, data, batches
    and schedule, on the ground-truth term alone (``params``' ``kd_weight`` and ``hint_weight``
    are then ignored, and ``unlabelled`` faces are not read).

    ``train`` holds faces at the aligned crops' side (``align.size``); each network reads every
    augmented batch resized to its own side
    (:func:`~agedistill.models.inputs.resize_faces`), and ``val`` holds faces at the student's.
    The ranking teacher's hinted map is average-pooled to the student's hinted map's side.

    The ground-truth term is :func:`~agedistill.training.losses.age_loss`, as for the class
    teacher; with ``params.age_balance`` > 0 each face counts by its age's
    :func:`~agedistill.training.age_balance.age_balance_weights`. ``params.mixup`` > 0 trains
    on blends of face pairs (:func:`~agedistill.data.augment.mix_pairs`): the teachers read the
    same blend, and the ground-truth term is blended with the same weight.

    ``params.teachers_read_clean``: the teachers read each face without the real-photo corruptions
    of ``params.train`` (the same shifts, flips and blends), so a corrupted face is still taught
    what its clean self looks like (:func:`~agedistill.data.augment.augment_views`).

    ``unlabelled`` (faces without ages, at ``train``'s side): with ``params.unlabelled_ratio``
    r > 0 every batch of B labelled faces gets round(r * B) of them, drawn at random, which only
    the soft-target and hint terms read; they are not blended by mixup.
    """
    desc = "distill"
    if teachers is None:  # the twin
        params = params.model_copy(update={"kd_weight": 0.0, "hint_weight": 0.0})
        teachers, unlabelled, desc = _NO_TEACHERS, None, "twin"
    opt, temperature, mixup = params.train, params.temperature, params.mixup
    gt_weight, kd_weight, hint_weight = params.gt_weight, params.kd_weight, params.hint_weight
    student_hint_stage, teacher_hint_stage = params.hint_stage, teachers.hint_stage
    class_teacher, rank_teacher = teachers.classifier, teachers.ranker
    loss = loss or AgeLossParams()  # plain cross-entropy
    label_sigma, mae_weight, min_age = loss.label_sigma, loss.mae_weight, ages.min_age
    ratio = params.unlabelled_ratio if unlabelled is not None and len(unlabelled) else 0.0
    if ratio and unlabelled.images.shape[1:] != train.images.shape[1:]:
        raise ValueError(
            f"unlabelled faces are {tuple(unlabelled.images.shape[1:])}, the labelled "
            f"{tuple(train.images.shape[1:])}: load both at the same side"
        )
    run = as_setup(out, log)
    seed_everything(opt.seed, opt.threads)
    config = convnet_config(model, ages, crop)
    student = build_model(config)
    dev = run.ctx.device
    adapter = None
    if hint_weight > 0:
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
        if t is not None:  # None: the twin
            t.eval().requires_grad_(False)
    # the teachers only infer: BatchNorm folded and channels-last, exact rewrites, ~3x faster
    class_teacher, rank_teacher = (
        None if t is None else fold_batchnorm(t).to(dev, memory_format=torch.channels_last)
        for t in (class_teacher, rank_teacher)
    )
    s_size = config["input_size"]
    t_size = teachers.input_size or s_size
    c_size = teachers.classifier_input_size or s_size
    if hint_weight > 0:
        _check_hint_maps(student, rank_teacher, s_size, t_size, student_hint_stage,
                         teacher_hint_stage)  # fmt: skip
    labels = train.labels(min_age)
    gt_weights = None  # the ground-truth term's weight of each training face
    if params.age_balance > 0:
        gt_weights = age_balance_weights(labels, ages.num_classes, params.age_balance)

    # a clean view only where a teacher reads it (not for the twin): the same draws either way
    teachers_clean = params.teachers_read_clean and (kd_weight > 0 or hint_weight > 0)

    def views(images: torch.Tensor, rand: EpochRandom) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented faces the student reads and those the teachers read: one tensor,
        unless ``teachers_read_clean`` (then the teachers' have no corruptions)."""
        if not teachers_clean:
            x = normalize(augment_batch(opt, images, rand.aug)).to(dev)
            return x, x
        seen, clean = augment_batch_views(opt, images, rand.aug)
        return normalize(seen).to(dev), normalize(clean).to(dev)

    def extra_faces(n: int, rand: EpochRandom) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(unlabelled), (n,), generator=rand.aug)
        return views(unlabelled.images[idx], rand)

    def loss_fn(idx, rand):
        x, xt = views(train.images[idx], rand)
        y = labels[idx].to(dev)
        w = None if gt_weights is None else gt_weights[idx].to(dev)
        if mixup > 0:
            x, partner, lam = mix_pairs(x, mixup, rand.np, rand.aug)
            xt = lam * xt + (1 - lam) * xt[partner] if teachers_clean else x
        n_extra = round(ratio * len(idx))
        if n_extra:
            extra, extra_t = extra_faces(n_extra, rand)
            x = torch.cat([x, extra])
            xt = torch.cat([xt, extra_t]) if teachers_clean else x
        emb, maps = student.forward_features(resize_faces(x, s_size))
        logits = student.head(student.dropout(emb))
        labelled = logits[: len(idx)]
        if mixup > 0:
            gt = mixed_age_loss(labelled, y, partner, lam, label_sigma, mae_weight, weights=w)
        else:
            gt = age_loss(labelled, y, label_sigma, mae_weight, weights=w)
        loss = gt_weight * gt
        logs = {"gt_loss": gt.item()}
        if kd_weight > 0:
            with torch.no_grad():
                t_logits = class_teacher(resize_faces(xt, c_size))
            kd = kd_loss(logits, t_logits, temperature)
            loss = loss + kd_weight * kd
            logs["kd_loss"] = kd.item()
        if hint_weight > 0:
            with torch.no_grad():
                t_map = rank_teacher.feature_map(resize_faces(xt, t_size), teacher_hint_stage)
            hint = hint_loss(adapter(maps[student_hint_stage]), t_map, params.hint_norm)
            loss = loss + hint_weight * hint
            logs["hint_loss"] = hint.item()
        logs["loss"] = loss.item()
        return loss, logs

    # the adapter only learns when hints are on (an unused module would get no gradient)
    modules = [student, adapter] if adapter is not None else [student]
    result = fit(
        modules, loss_fn, len(train), opt, run,
        validate=lambda vi: {"val_mae": age_mae(student, val.images[vi], val.ages[vi], min_age)},
        n_val=len(val), select="val_mae", lower_is_better=True, best_model=(student, config),
        desc=desc,
    )  # fmt: skip
    if run.ctx.is_main:
        result.update(calibrate_model_file(run.out, val))
    return {**result, "params": count_parameters(student)}
