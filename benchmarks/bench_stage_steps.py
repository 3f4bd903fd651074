"""One training step of each stage under two profiles, side by side, and the full run it projects.

    python benchmarks/bench_stage_steps.py --base profiles/full-prints.yaml \\
        --new profiles/full-fast.yaml --wall results/full-v12/stage_wall_s.json \\
        [--out results/benchmarks/bench_stage_steps.json] [--steps 6] [--threads 2]

For each profile (``params.yaml`` with the profile laid on top) it times, in one process and in
turns, the median wall time of one optimiser step of each training stage at that profile's
sizes, precisions and batch: the ranking teacher on K-face sequences, the class teacher, the twin
(the student on the ground truth alone) and ``distill`` (the augmentation of the labelled and the
unlabelled faces, the student, the class teacher's soft targets and the ranking teacher's hinted
map). ``distill`` is timed twice: reading the ranking teacher up to its hinted stage only
(:meth:`~agedistill.models.nets.RankTeacher.feature_map`, what ``distill`` does) and through its
whole backbone, as releases before ``feature_map`` did. The faces are random: the cost of a step
does not depend on what they show.

It also times ``evaluate``'s reading of 256 faces by each model of the new profile, through the
plain module (as releases before this one read them) and with BatchNorm folded and channels-last
(as ``evaluate`` reads them now).

``--wall``: a measured run of ``--base`` (``stage_wall_s.json``, with ``split.json`` beside it for
the number of faces ``evaluate`` reads); each training stage's time is scaled by the new
profile's step time over the base's (1 where the stage's settings are the same), ``evaluate``
loses the time the faster reading saves, and the other stages are kept. ``--code-ratios``: where
``--wall``'s run is of earlier code, the JSON of ``benchmarks/bench_train_loop.py`` (this code's
seconds per step over that code's, twin and distill), by which those stages are scaled too. This
projects the new profile's full run on the CPU that made ``--wall``: a projection, not a
measurement; the run itself is the measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agedistill.config import Params, parse_params, raw_params
from agedistill.models.folding import fold_batchnorm
from agedistill.models.inputs import normalize, resize_faces
from agedistill.models.nets import ConvNet, PretrainedNet, RankTeacher
from agedistill.pipeline.machine import cpu_name
from agedistill.pipeline.profiles import load_profile, merge
from agedistill.training.loop import augment_batch, augment_batch_views
from agedistill.training.precision import autocast

CPU = torch.device("cpu")
TRAINING_STAGES = ("rank_teacher", "class_teacher", "twin", "distill")


def profile_params(profile: str | Path) -> Params:
    """``params.yaml`` with ``profile`` (and its bases) laid on top, validated."""
    return parse_params(merge(raw_params(), load_profile(profile)))


def stage_settings(p: Params) -> dict[str, Any]:
    """What each training stage's step cost depends on: equal settings, equal cost."""
    twin = (p.align.size, p.student, p.distill.train, p.distill.teachers_read_clean)
    return {
        "rank_teacher": (p.align.size, p.rank_teacher),
        "class_teacher": (p.align.size, p.student, p.class_teacher),
        "twin": twin,
        "distill": (*twin, p.class_teacher, p.rank_teacher, p.distill),
    }


def _step(modules: list[torch.nn.Module], loss: Callable[[], torch.Tensor], precision: str):
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params)

    def run() -> None:
        with autocast(precision, CPU):
            value = loss()
        opt.zero_grad()
        value.float().backward()
        opt.step()

    return run


def _cl(x: torch.Tensor, on: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if on else x


def stage_steps(p: Params) -> dict[str, Callable[[], None]]:
    """One step of each training stage at ``p``'s sizes (``distill`` twice: see the module)."""
    side, n_classes = p.align.size, p.ages.num_classes
    rt_p, ct_p, d = p.rank_teacher, p.class_teacher, p.distill
    faces = torch.randint(0, 256, (d.train.batch_size, 3, side, side), dtype=torch.uint8)
    n_extra = round(d.unlabelled_ratio * d.train.batch_size)
    extra = torch.randint(0, 256, (n_extra, 3, side, side), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    steps: dict[str, Callable[[], None]] = {}

    # the ranking teacher: sequences of K faces, a K!-way permutation head
    rt = RankTeacher(rt_p.model.widths, rt_p.k, rt_p.feature_dim, rt_p.model.stem_stride,
                     rt_p.model.depthwise, backbone=rt_p.model.backbone).train()  # fmt: skip
    rt = rt.to(memory_format=torch.channels_last) if rt_p.train.channels_last else rt
    s = rt_p.model.input_size
    seq = torch.randn(rt_p.train.batch_size, rt_p.k, 3, s, s)
    perm = torch.randint(0, rt(seq[:1]).shape[1], (len(seq),))
    steps["rank_teacher"] = _step([rt], lambda: F.cross_entropy(rt(seq).float(), perm),
                                  rt_p.train.precision)  # fmt: skip

    # the class teacher
    ct = (PretrainedNet(ct_p.backbone, n_classes) if ct_p.backbone != "student"
          else ConvNet(p.student.widths, n_classes, p.student.stem_stride)).train()  # fmt: skip
    ct = ct.to(memory_format=torch.channels_last) if ct_p.channels_last else ct
    c_size = ct_p.input_size or p.student.input_size
    y = torch.randint(0, n_classes, (ct_p.batch_size,))

    def class_loss() -> torch.Tensor:
        x = normalize(augment_batch(ct_p, faces[: ct_p.batch_size], gen))
        return F.cross_entropy(ct(_cl(resize_faces(x, c_size), ct_p.channels_last)).float(), y)

    steps["class_teacher"] = _step([ct], class_loss, ct_p.precision)

    # the twin and distill: the student, and the two teachers as distill reads them
    opt, s_size = d.train, p.student.input_size
    student = ConvNet(p.student.widths, n_classes, p.student.stem_stride).train()
    student = student.to(memory_format=torch.channels_last) if opt.channels_last else student
    y = torch.randint(0, n_classes, (opt.batch_size,))

    def twin_loss() -> torch.Tensor:
        x = normalize(augment_batch(opt, faces, gen))
        return F.cross_entropy(student(_cl(resize_faces(x, s_size), opt.channels_last)).float(), y)

    steps["twin"] = _step([student], twin_loss, opt.precision)
    c_eval = fold_batchnorm(ct.eval()).to(memory_format=torch.channels_last)
    r_eval = fold_batchnorm(rt.eval()).to(memory_format=torch.channels_last)
    t_size, stage = p.rank_teacher.model.input_size, p.rank_teacher.hint_stage

    def views(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if d.teachers_read_clean:
            seen, clean = augment_batch_views(opt, images, gen)
            return normalize(seen), normalize(clean)
        x = normalize(augment_batch(opt, images, gen))
        return x, x

    def distill_loss(whole_backbone: bool) -> torch.Tensor:
        x, xt = views(faces)
        if n_extra:
            (e, et) = views(extra)
            x, xt = torch.cat([x, e]), torch.cat([xt, et])
        emb, maps = student.forward_features(_cl(resize_faces(x, s_size), opt.channels_last))
        logits = student.head(emb).float()
        with torch.no_grad():
            soft = c_eval(resize_faces(xt, c_size)).float().softmax(1)
            r_in = resize_faces(xt, t_size)
            t_map = (r_eval.feature_maps(r_in)[stage] if whole_backbone
                     else r_eval.feature_map(r_in, stage))  # fmt: skip
        return (F.cross_entropy(logits[: len(y)], y) - (soft * logits.log_softmax(1)).sum(1).mean()
                + maps[d.hint_stage].float().mean() * 0 + t_map.float().mean() * 0)  # fmt: skip

    steps["distill"] = _step([student], lambda: distill_loss(False), opt.precision)
    steps["distill, the ranking teacher's whole backbone"] = _step(
        [student], lambda: distill_loss(True), opt.precision
    )
    return steps


def evaluate_readings(p: Params, batch: int = 256) -> dict[str, Callable[[], None]]:
    """Reading ``batch`` faces by each model of ``p``, plain and as ``evaluate`` reads them.

    The class teacher, the student (the twin is the same net) and the ranking teacher's backbone,
    each at its side, in float32: ``plain`` the eval-mode module on NCHW faces, ``folded``
    BatchNorm folded and channels-last. Each reads the faces and their mirror images.
    """
    n_classes, rt_p, ct_p = p.ages.num_classes, p.rank_teacher, p.class_teacher
    nets = {
        "class_teacher": (PretrainedNet(ct_p.backbone, n_classes) if ct_p.backbone != "student"
                          else ConvNet(p.student.widths, n_classes, p.student.stem_stride),
                          ct_p.input_size or p.student.input_size),
        "student": (ConvNet(p.student.widths, n_classes, p.student.stem_stride),
                    p.student.input_size),
        "rank_teacher": (RankTeacher(rt_p.model.widths, rt_p.k, rt_p.feature_dim,
                                     rt_p.model.stem_stride, rt_p.model.depthwise,
                                     backbone=rt_p.model.backbone).backbone,
                         rt_p.model.input_size),
    }  # fmt: skip
    runs: dict[str, Callable[[], None]] = {}
    for name, (net, side) in nets.items():
        x = torch.randn(batch, 3, side, side)
        for how, model in (("plain", net.eval()),
                           ("folded", fold_batchnorm(net.eval()).to(
                               memory_format=torch.channels_last))):  # fmt: skip

            @torch.inference_mode()
            def read(model=model, x=x) -> None:
                model.forward_features(x)
                model.forward_features(x.flip(-1))

            runs[f"evaluate reads {batch} faces: {name}, {how}"] = read
    return runs


def evaluate_saving_s(secs: dict[str, float], split: dict[str, Any], batch: int = 256) -> float:
    """Seconds ``evaluate`` saves at ``split``'s size: each model's faces x (plain - folded).

    The ranking teacher's probe reads the train and the test part; the class teacher, the student
    and the twin the test part (each face and its mirror image, as timed).
    """
    faces = {"rank_teacher": split["train"] + split["test"], "class_teacher": split["test"],
             "student": 2 * split["test"]}  # fmt: skip
    saved = 0.0
    for name, n in faces.items():
        key = f"evaluate reads {batch} faces: {name}"
        saved += n / batch * (secs[f"{key}, plain"] - secs[f"{key}, folded"])
    return saved


def time_in_turns(
    runs: dict[str, Callable[[], None]], steps: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each callable, run in turns (one call each, ``steps`` rounds)."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(steps):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def project(wall: dict[str, float], ratios: dict[str, float]) -> dict[str, float]:
    """``wall`` (seconds per stage) with each training stage scaled by its step-time ratio."""
    return {stage: s * ratios.get(stage, 1.0) for stage, s in wall.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="profile of the measured run")
    ap.add_argument("--new", required=True, help="profile to compare and project")
    ap.add_argument("--wall", help="stage_wall_s.json of a measured run of --base")
    ap.add_argument("--code-ratios", help="bench_train_loop.py's JSON: --wall's code to this")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/benchmarks/bench_stage_steps.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    runs: dict[str, Callable[[], None]] = {}
    base, new = profile_params(args.base), profile_params(args.new)
    same = {k for k, v in stage_settings(new).items() if stage_settings(base)[k] == v}
    for label, profile in (("base", args.base), ("new", args.new)):
        for stage, run in stage_steps(profile_params(profile)).items():
            runs[f"{label}: {stage}"] = run
    runs.update(evaluate_readings(profile_params(args.new)))
    secs = time_in_turns(runs, args.steps)
    # a stage whose settings are the base's costs the same: its ratio is 1, not timing noise
    ratios = {s: 1.0 if s in same else secs[f"new: {s}"] / secs[f"base: {s}"]
              for s in TRAINING_STAGES}  # fmt: skip
    whole = "distill, the ranking teacher's whole backbone"
    code = {}
    if args.code_ratios:
        code = json.loads(Path(args.code_ratios).read_text())["this_over_before"]
    out: dict[str, Any] = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "base": args.base,
        "new": args.new,
        "ms_per_step": {k: round(1000 * v, 1) for k, v in secs.items()},
        "new_over_base": {k: round(v, 3) for k, v in ratios.items()},
        "same_settings": sorted(same),
        "distill_hint_stage_only_over_whole_backbone": {
            label: round(secs[f"{label}: distill"] / secs[f"{label}: {whole}"], 3)
            for label in ("base", "new")
        },
    }
    if args.wall:
        measured = json.loads(Path(args.wall).read_text())["stage_wall_s"]
        split = json.loads((Path(args.wall).parent / "split.json").read_text())
        projected = project(measured, {k: r * code.get(k, 1.0) for k, r in ratios.items()})
        out["evaluate_saving_s"] = round(evaluate_saving_s(secs, split))
        projected["evaluate"] -= out["evaluate_saving_s"]
        out["wall_from"] = args.wall
        out["code_ratios"] = {"from": args.code_ratios, **code} if code else None
        out["projected_stage_wall_s"] = {k: round(v) for k, v in projected.items()}
        out["projected_total_min"] = round(sum(projected.values()) / 60, 1)
        out["measured_total_min"] = round(sum(measured.values()) / 60, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for k, v in out["ms_per_step"].items():
        print(f"{k:60s} {v:8.1f} ms")
    print(json.dumps({k: out[k] for k in out if k not in ("ms_per_step",)}, indent=2))


if __name__ == "__main__":
    main()
