"""Strict, typed view of ``params.yaml``; its defaults are ``params.yaml``'s values.

Every stage validates its section when it starts, so a wrong type, a value out of range or an
unknown key is a one-line error naming the key (``distill.temperature: ...``), not a traceback deep
inside training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agedistill.faces.detection import DETECT
from agedistill.models.nets import RANK_HEADS, backbone_sides, stage_sides

PosInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]

# train.precision: float32, or bfloat16 autocast (agedistill.training.precision)
PRECISIONS = ("fp32", "bf16")
# ImageNet-pretrained backbones of the teachers: agedistill.models.backbones.BACKBONE_NAMES
PRETRAINED = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


class ParamsError(ValueError):
    """Raised when ``params.yaml`` is missing a key, has an unknown key or a bad value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SourceParams(_Strict):
    """One labelled image folder that ``align`` reads.

    ``name`` is the source's value in the manifest's ``source`` column, in per-source metrics and
    in ``data/inventory/NAME.csv`` (the list of its files that makes every source a DVC dependency).
    ``csv`` (reader ``csv``) is the label table, relative to ``path`` and inside it; the paths in it
    are relative to the table's own folder. ``test_part``: rows whose table ``split`` value is this
    are the source's fixed test part (APPA-REAL: ``valid``). ``test_list``: a CSV whose ``file``
    column lists the source's test part by path relative to ``path``, so that the test part stays
    the same faces when the detector or the other sources change (``data/test_parts/``).
    Reader ``unlabelled``: faces without ages (LFW, CelebA), aligned like the others but kept out
    of train/val/test (``unlabelled.csv``).
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    path: str
    reader: Literal["utkface", "fgnet", "csv", "unlabelled"] = "utkface"
    csv: str | None = None
    test_part: str | None = None
    test_list: str | None = None  # CSV (column `file`, relative to `path`): the fixed test part


class AgesParams(_Strict):
    """The age range and class layout shared by every model."""

    min_age: Annotated[int, Field(ge=0)] = 0
    max_age: PosInt = 100
    # ages outside [min_age, max_age] are clipped to the range ("clip") or rejected ("drop")
    out_of_range: Literal["clip", "drop"] = "clip"

    @model_validator(mode="after")
    def _range(self) -> AgesParams:
        if self.max_age <= self.min_age:
            raise ValueError("max_age must be greater than min_age")
        return self

    @property
    def num_classes(self) -> int:
        """One class per integer age in ``[min_age, max_age]``."""
        return self.max_age - self.min_age + 1


class AlignParams(_Strict):
    sources: list[SourceParams] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> AlignParams:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self

    size: PosInt = 112  # the largest input side of the three networks (each reads its resize)
    margin: Annotated[float, Field(ge=-0.25, le=1.0)] = 0.0
    template: Literal["arcface", "utkface"] = "utkface"  # crop framing (faces.geometry.TEMPLATES)
    # detection defaults: agedistill.faces.detection.DETECT, shared with ``predict``
    detector: Literal["mtcnn", "blazeface"] = DETECT.detector  # faces.detectors.DETECTORS
    min_prob: Fraction = DETECT.min_prob
    min_face_size: PosInt = DETECT.min_face_size
    select: Literal["largest", "central"] = "largest"
    detect_max_side: PosInt = DETECT.detect_max_side
    # black border around images before detection (x longer side); see faces.mtcnn.MtcnnDetector
    detect_pad: Annotated[float, Field(ge=0, le=1)] = DETECT.pad
    batch_size: PosInt = DETECT.batch_size
    workers: Annotated[int, Field(ge=0)] = 2
    threads: Annotated[int, Field(ge=0)] = 1  # torch threads for detection; 0 = torch default
    limit: Annotated[int, Field(ge=0)] = 0  # 0 = every file

    def crop_settings(self) -> dict[str, Any]:
        """How faces were found and cropped: what a model file records for ``predict``."""
        return {"margin": self.margin, "template": self.template, "detect_pad": self.detect_pad,
                "detector": self.detector, "size": self.size}  # fmt: skip


class SplitParams(_Strict):
    seed: int = 0
    method: Literal["stratified", "kfold", "loso", "cross_dataset"] = "stratified"
    holdout: str | None = None  # cross_dataset: the source (a name in align.sources) held out
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.2
    test_size: Annotated[int, Field(ge=0)] = 0  # if > 0: about this many test rows per source
    folds: Annotated[int, Field(ge=2)] = 5
    fold: Annotated[int, Field(ge=0)] = 0
    age_bin: PosInt = 5


class TrainParams(_Strict):
    """Optimisation knobs shared by the three training stages (``class_teacher``'s defaults)."""

    epochs: PosInt = 12
    batch_size: PosInt = 64
    lr: PosFloat = 3e-3
    weight_decay: NonNegFloat = 5e-4
    seed: int = 0
    threads: Annotated[int, Field(ge=0)] = 2  # 0 = torch default
    max_shift: Annotated[int, Field(ge=0)] = 7  # pixels at the side of the faces read
    flip: bool = True
    rotate: Annotated[float, Field(ge=0, le=45)] = 0.0  # degrees, per face; 0 = off
    scale: Annotated[float, Field(ge=0, lt=0.5)] = 0.0  # relative zoom, per face; 0 = off
    color: Annotated[float, Field(ge=0, lt=1)] = 0.0  # brightness/contrast/saturation; 0 = off
    # real-photo corruptions: each the probability that a face gets it (strengths: data/augment.py)
    grayscale: Probability = 0.0  # ITU-R 601 luma on all three channels
    scan: Probability = 0.0  # an old print, scanned: faded contrast, sepia tone, film grain
    blur: Probability = 0.0  # Gaussian blur
    jpeg: Probability = 0.0  # JPEG re-encoding at a low quality
    low_res: Probability = 0.0  # downscaled and upsampled back: a small face
    crop_context: Probability = 0.0  # black bands on the sides: a crop too tight
    ema_epochs: Annotated[float, Field(ge=0)] = 0.0  # weight average horizon; 0 = off
    precision: Literal[PRECISIONS] = "fp32"  # bf16: autocast, ~2x faster on AMX/AVX512-BF16
    channels_last: bool = False  # conv weights (and so activations) laid out NHWC


class ClassTeacherParams(TrainParams):
    """``class_teacher``: its training knobs, and its network.

    ``backbone: student`` is the paper's setting, the student's own network (``student``);
    a name of :data:`PRETRAINED` fine-tunes that ImageNet-pretrained backbone. ``input_size``
    0 reads faces at the student's side.
    """

    backbone: Literal[("student", *PRETRAINED)] = "mobilenet_v2"
    input_size: Annotated[int, Field(ge=0)] = 112
    epochs: PosInt = 5
    lr: PosFloat = 1e-3  # fine-tuning ImageNet weights
    channels_last: bool = True


class RankTrainParams(TrainParams):
    """``rank_teacher.train``: the same knobs, a shorter schedule over batches of sequences."""

    epochs: PosInt = 3
    batch_size: PosInt = 32  # sequences per batch (each K faces)
    lr: PosFloat = 1e-3  # fine-tuning ImageNet weights
    channels_last: bool = True


class ModelParams(_Strict):
    """A plain conv-conv-pool network; the student and the class teacher share it."""

    widths: list[PosInt] = Field(min_length=1)
    stem_stride: Literal[1, 2] = 2
    depthwise: bool = False
    input_size: PosInt = 64
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


class RankModelParams(ModelParams):
    """``rank_teacher.model``: a conv net trained from scratch or a pretrained backbone.

    ``backbone: convnet`` builds a :class:`~agedistill.models.nets.ConvNet` of ``widths``,
    ``stem_stride`` and ``depthwise``; a name of :data:`PRETRAINED` fine-tunes that
    ImageNet-pretrained backbone (those three keys are then unused).
    """

    backbone: Literal[("convnet", *PRETRAINED)] = "mobilenet_v2"
    input_size: PosInt = 112


class RankTeacherParams(_Strict):
    model: RankModelParams
    train: RankTrainParams
    k: Annotated[int, Field(ge=2, le=5)] = 3
    head: Literal[RANK_HEADS] = "permutation"
    min_gap: Annotated[int, Field(ge=1)] = 5
    sampling: Literal["uniform_age", "uniform_image"] = "uniform_age"
    sequences_per_epoch: PosInt = 500
    val_sequences: PosInt = 200
    feature_dim: PosInt = 128
    hint_stage: Annotated[int, Field(ge=0)] = 2


class AgeLossParams(_Strict):
    """The ground-truth loss of ``class_teacher`` and ``distill`` (one section: the twins share it).

    ``label_sigma`` 0 is one-hot cross-entropy; > 0 a Gaussian label distribution of that width in
    years (DLDL). ``mae_weight`` adds that multiple of the expected age's L1 error.
    """

    label_sigma: NonNegFloat = 0.0
    mae_weight: NonNegFloat = 0.0


# how the hint's two maps are normalised before they are compared (training.losses.hint_loss)
HintNorm = Literal["sample", "channel", "attention"]


class DistillParams(_Strict):
    train: TrainParams
    temperature: PosFloat = 2.0
    gt_weight: NonNegFloat = 1.0
    kd_weight: NonNegFloat = 1.0
    hint_weight: NonNegFloat = 1.0
    hint_stage: Annotated[int, Field(ge=0)] = 2
    hint_norm: HintNorm = "sample"
    mixup: NonNegFloat = 0.2  # Beta(a, a) blend of face pairs, fed to student and teachers; 0 = off
    # unlabelled faces (align sources with reader: unlabelled) per labelled face in each batch;
    # read by the soft-target and hint terms only; 0 = off
    unlabelled_ratio: NonNegFloat = 0.0
    # the teachers read each face before the real-photo corruptions of ``train`` (the same shifts,
    # flips and blends): soft targets and hints of the face, not of its damage
    teachers_read_clean: bool = False
    # ground-truth term weighted by the smoothed count of the face's age to this power, negated
    # (label-distribution smoothing): 0 = every face alike (full.yaml), 0.5 lifts rare ages more;
    # distill and twin
    age_balance: Annotated[float, Field(ge=0, le=1)] = 0.25


class EvaluateParams(_Strict):
    cs_max: Annotated[int, Field(ge=0)] = 10
    latency_batch: PosInt = 64
    latency_repeats: PosInt = 10
    register_model: bool = True


class DistributedParams(_Strict):
    """Data-parallel training of the three training stages (``torchrun`` under the hood)."""

    nproc: PosInt = 1  # processes per training stage; 1 = a plain single process
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with CUDA GPUs, else gloo


class Params(_Strict):
    """The whole of ``params.yaml``."""

    ages: AgesParams
    align: AlignParams
    split: SplitParams
    student: ModelParams
    rank_teacher: RankTeacherParams
    class_teacher: ClassTeacherParams
    age_loss: AgeLossParams = AgeLossParams()
    distill: DistillParams
    evaluate: EvaluateParams
    distributed: DistributedParams = DistributedParams()

    @model_validator(mode="after")
    def _holdout_is_a_source(self) -> Params:
        names = [s.name for s in self.align.sources]
        if self.split.method == "cross_dataset":
            if self.split.holdout not in names:
                raise ValueError(
                    f"split.method=cross_dataset needs split.holdout set to one of the sources "
                    f"{names} (got {self.split.holdout!r})"
                )
            if len(names) < 2:
                raise ValueError("split.method=cross_dataset needs at least two align.sources")
        return self

    @model_validator(mode="after")
    def _hint_maps_match(self) -> Params:
        # the ranking teacher reads the student's batch resized to its own input size; the hint
        # matches one stage of each, so their feature maps must have the same side
        if self.distill.hint_weight <= 0:
            return self
        s, t = self.student, self.rank_teacher.model
        s_stage, t_stage = self.distill.hint_stage, self.rank_teacher.hint_stage
        if t.backbone == "convnet":
            t_sides = stage_sides(t.input_size, t.stem_stride, len(t.widths))
        else:
            t_sides = backbone_sides(t.input_size)
        if s_stage >= len(s.widths) or t_stage >= len(t_sides):
            raise ValueError(
                f"distill.hint_stage={s_stage} / rank_teacher.hint_stage={t_stage}: the student "
                f"has {len(s.widths)} stages, the ranking teacher {len(t_sides)}"
            )
        s_side = stage_sides(s.input_size, s.stem_stride, len(s.widths))[s_stage]
        t_side = t_sides[t_stage]
        if t_side < s_side:
            raise ValueError(
                f"the hint matches the student's stage {s_stage} ({s_side}x{s_side} at "
                f"{s.input_size} px) with the ranking teacher's stage {t_stage} ({t_side}x{t_side} "
                f"at {t.input_size} px): the teacher's map must be at least the student's side "
                "(it is average-pooled to it); choose other hint stages"
            )
        return self


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate a params mapping; raise :class:`ParamsError` naming every bad key.

    YAML writes ``1e-3`` as a string and ``4`` where a float is meant; both are coerced, any other
    type mismatch is an error.
    """
    try:
        return Params.model_validate(_coerce_numbers(raw))
    except ValidationError as err:
        raise ParamsError(f"invalid params: {_format(err)}") from None


def _coerce_numbers(obj: Any) -> Any:
    # strict mode refuses int->float and "1e-3"->float; YAML users write both and mean a number
    if isinstance(obj, dict):
        return {k: _coerce_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_coerce_numbers(v) for v in obj]
    if isinstance(obj, str):
        try:
            return float(obj) if any(c in obj.lower() for c in ".e") and obj.strip() else obj
        except ValueError:
            return obj
    return obj


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    with path.open() as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return parse_params(raw)


def raw_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The params file as a plain mapping (for hashing and tagging runs)."""
    with Path(path).open() as f:
        return yaml.safe_load(f) or {}
