"""Distillation ablation: the student trained with each signal switched on or off, over seeds.

Runs on top of a finished pipeline workspace (its params, split, crops and both teachers), so the
teachers are shared by every row and only the student varies. Each (variant, seed) run is trained
in its own process, scored on the test part, logged to MLflow as stage ``ablation`` and written to
``<out>/runs/<name>.json``. Finished runs are skipped and a run in flight checkpoints every epoch,
so a killed grid resumes where it stopped, losing one epoch at most.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import signal
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agedistill.pipeline.outputs import write_json

if TYPE_CHECKING:
    from agedistill.config import DistillParams, Params
    from agedistill.data.tables import FaceTable

# the distillation signals each variant keeps (soft targets, hint); a kept signal has the
# params' weight (``distill.kd_weight`` / ``distill.hint_weight``), a dropped one weight 0
VARIANTS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),  # the student's non-distilled twin
    "soft": (True, False),
    "hint": (False, True),
    "both": (True, True),
}


def variant_weights(variant: str, d: DistillParams) -> dict[str, float]:
    """``kd_weight`` and ``hint_weight`` of a ``variant`` run under the distill params ``d``:
    each signal the variant keeps at its weight in ``d``, the others at 0."""
    kd, hint = VARIANTS[variant]
    if (kd and d.kd_weight <= 0) or (hint and d.hint_weight <= 0):
        raise ValueError(
            f"variant {variant!r} needs its signals on: distill.kd_weight={d.kd_weight}, "
            f"distill.hint_weight={d.hint_weight}"
        )
    return {"kd_weight": d.kd_weight if kd else 0.0, "hint_weight": d.hint_weight if hint else 0.0}


@dataclass(frozen=True)
class Workspace:
    """Where a finished pipeline keeps what the ablation reads (the paths of ``dvc.yaml``)."""

    params: Path = Path("params.yaml")
    crops: Path = Path("data/aligned/crops")
    split: Path = Path("data/split")
    class_teacher: Path = Path("models/class_teacher.pt")
    rank_teacher: Path = Path("models/rank_teacher.pt")
    student: Path = Path("models/student.pt")
    distill_metrics: Path = Path("metrics/distill.json")
    twin: Path = Path("models/twin.pt")
    twin_metrics: Path = Path("metrics/twin.json")
    # class teachers averaged with ``class_teacher`` into one (TeacherEnsemble); paths as given
    more_class_teachers: tuple[Path, ...] = ()

    @classmethod
    def of(cls, folder: Path) -> Workspace:
        """The workspace of the pipeline run in ``folder`` (every path under it)."""
        return cls(**{f.name: folder / f.default for f in fields(cls)
                      if isinstance(f.default, Path)})  # fmt: skip

    def digests(self) -> dict[str, Any]:
        """SHA-256 of the teacher files: which teachers a run was distilled from."""
        from agedistill.training.checkpoints import file_digest

        digests: dict[str, Any] = {"class_teacher": file_digest(self.class_teacher),
                                   "rank_teacher": file_digest(self.rank_teacher)}  # fmt: skip
        if self.more_class_teachers:
            digests["more_class_teachers"] = [file_digest(p) for p in self.more_class_teachers]
        return digests

    def load_class_teacher(self) -> tuple[Any, dict[str, Any]]:
        """The class teacher a run distils from: ``class_teacher``, or the ensemble of it and
        ``more_class_teachers``; with the (first) file's config."""
        from agedistill.models.ensemble import load_ensemble
        from agedistill.models.files import load_model

        if self.more_class_teachers:
            return load_ensemble([self.class_teacher, *self.more_class_teachers])
        return load_model(self.class_teacher)

    def check(self) -> None:
        """Fail with the first missing input, naming the command that makes it."""
        for p in (self.params, self.crops, self.split / "test.csv", self.class_teacher,
                  self.rank_teacher):  # fmt: skip
            if not p.exists():
                raise FileNotFoundError(f"{p}: missing; run the pipeline first (dvc repro)")


# keys outside a probed section that select how its stage reads a trained model, not the model
_READ_ONLY_KEYS = {"distill": ("rank_teacher.hint_stage",)}


def with_overrides(
    ws: Workspace, sets: list[str], out: Path, section: str = "distill"
) -> Workspace:
    """``ws`` with its ``section`` params changed by ``KEY=VALUE`` pairs, for probes of one knob.

    Keys are dotted (``distill.mixup=0.2``), values YAML. Only ``section.*`` may change: for
    ``distill`` the teachers are the workspace's, trained with its other params (its one other
    key, ``rank_teacher.hint_stage``, picks which of the trained ranker's maps the hint reads,
    with ``distill.hint_stage``); a probe of the
    class teacher (``section="class_teacher"``) keeps the workspace's split. The merged params
    are validated and written to ``out/params.yaml``; an ``out`` folder keeps one set of params,
    so pointing it at other overrides is refused rather than mixing runs of two recipes in one
    table; without ``sets`` a folder that has its params file goes on with it.
    """
    import yaml

    from agedistill.config import parse_params, raw_params
    from agedistill.pipeline.profiles import merge

    path = out / "params.yaml"
    if not sets and path.exists():  # resuming or tabulating a probe: its own params
        return replace(ws, params=path)
    over: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not (
            key.startswith(f"{section}.") or key in _READ_ONLY_KEYS.get(section, ())
        ):
            raise ValueError(f"--set {item!r}: expected {section}.KEY=VALUE (the rest is fixed)")
        node = over
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    merged = merge(raw_params(ws.params), over)
    parse_params(merged)  # unknown keys and bad values fail here, before any training
    text = yaml.safe_dump(merged, sort_keys=False)
    if path.exists() and path.read_text() != text:
        raise ValueError(f"{path}: this folder holds runs of other params; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return replace(ws, params=path)


def run_name(variant: str, seed: int) -> str:
    """File and MLflow name of one ablation run."""
    return f"{variant}-s{seed}"


def plan(variants: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Runs in the order given: every seed of the first variant, then the next variant."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    return [(v, s) for v in variants for s in seeds]


def test_score(model_file: Path, test: Any, cs_max: int) -> dict[str, Any]:
    """Test metrics of a student-shaped model file (MAE, CS, grouped MAE; MAE with flip TTA)."""
    from agedistill.evaluation.scoring import score
    from agedistill.models.files import load_model
    from agedistill.models.predictions import predict_ages_and_flipped

    model, config = load_model(model_file)
    pred, flip = predict_ages_and_flipped(model, test.images, config["min_age"])
    return score(pred.numpy(), test, cs_max, flip.numpy())


def class_teacher_score(ws: Workspace) -> dict[str, Any]:
    """The class teacher's test metrics: the no-distillation baseline of every row."""
    from agedistill.config import load_params
    from agedistill.data.tables import load_table
    from agedistill.models.files import load_model

    params = load_params(ws.params)
    _, config = load_model(ws.class_teacher)
    test = load_table(ws.split / "test.csv", ws.crops, config["input_size"])  # its own side
    return test_score(ws.class_teacher, test, params.evaluate.cs_max)


def _train_and_score(job: tuple[Workspace, str, int, Path, int]) -> dict[str, Any]:
    """One ablation run (in a worker process): train the student, score it on the test part."""
    ws, variant, seed, out, threads = job
    from agedistill.config import load_params, raw_params
    from agedistill.data.tables import load_table
    from agedistill.models.files import load_model
    from agedistill.pipeline.tracking import mlflow_run
    from agedistill.training.checkpoints import TrainState, file_digest, fingerprint
    from agedistill.training.loop import TrainingSetup
    from agedistill.training.recipes import Teachers, train_student

    params = load_params(ws.params)
    arch, d = params.student, params.distill
    weights = variant_weights(variant, d)
    opt = d.train.model_copy(update={"seed": seed, "threads": threads})
    train = load_table(ws.split / "train.csv", ws.crops, params.align.size)  # as distill reads it
    val = load_table(ws.split / "val.csv", ws.crops, arch.input_size)
    test = load_table(ws.split / "test.csv", ws.crops, arch.input_size)
    unlabelled = None
    if d.unlabelled_ratio > 0:
        unlabelled = load_table(ws.split / "unlabelled.csv", ws.crops, params.align.size,
                                labelled=False)  # fmt: skip
    class_teacher, class_config = ws.load_class_teacher()
    rank_teacher, rank_config = load_model(ws.rank_teacher)
    name = run_name(variant, seed)
    model_file = out / "models" / f"{name}.pt"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    stage_params = {**d.model_dump(), **weights, "variant": variant, "seed": seed,
                    "model": arch.model_dump(),
                    "age_loss": params.age_loss.model_dump()}  # fmt: skip
    key = fingerprint("ablation", stage_params, train.images, train.ages, val.images, val.ages,
                      file_digest(ws.class_teacher), file_digest(ws.rank_teacher),
                      *(file_digest(p) for p in ws.more_class_teachers))  # fmt: skip
    state = TrainState(out / "checkpoints" / name, key)  # a killed run resumes its last epoch
    with mlflow_run("ablation", stage_params, raw_params(ws.params), state.mlflow_run_id()) as run:
        teachers = Teachers(class_teacher, rank_teacher, params.rank_teacher.hint_stage,
                            rank_config["input_size"], class_config["input_size"])  # fmt: skip
        if variant == "none":  # the twin stage's own recipe: no teachers, no unlabelled faces
            teachers = None
        fit = train_student(
            train, val, arch, d.model_copy(update={"train": opt, **weights}), params.ages, teachers,
            out=TrainingSetup(model_file, state=state, log=run.log_metrics,
                              mlflow_run_id=run.run_id, has_logged=run.has_metric),
            loss=params.age_loss, crop=params.align.crop_settings(), unlabelled=unlabelled,
        )  # fmt: skip
        result = {"variant": variant, "seed": seed, "fit": fit, "teachers": ws.digests(),
                  "test": test_score(model_file, test, params.evaluate.cs_max)}  # fmt: skip
        run.log_metrics({f"test_{k}": v for k, v in result["test"].items()})
    write_json(result, out / "runs" / f"{name}.json")
    return result


def adopt_pipeline_models(ws: Workspace, out: Path) -> list[dict[str, Any]]:
    """Score the pipeline's distilled student and its twin as the ablation runs they are.

    The ``distill`` stage trains exactly one ablation run: the variant its ``kd_weight`` and
    ``hint_weight`` select, at its ``seed``, on the same teachers; the ``twin`` stage trains the
    ``none`` run at the same seed. Adopting them saves training those runs again; they differ
    from runs of the grid in their torch threads (the float rounding of their steps) and in not
    being logged to MLflow as stage ``ablation``. Refuses unless the workspace's ``dvc.lock``
    shows each model built by one process from exactly the params now in the workspace, and
    when either run exists or is in flight. Returns the student's result, then the twin's.
    """
    from agedistill.config import load_params
    from agedistill.data.tables import load_table

    ws.check()
    params = load_params(ws.params)
    d = params.distill
    signals = (d.kd_weight > 0, d.hint_weight > 0)
    variant = next(v for v, on in VARIANTS.items() if on == signals)
    adoptions = [("distill", ws.student, ws.distill_metrics, variant),
                 ("twin", ws.twin, ws.twin_metrics, "none")]  # fmt: skip
    for stage, model, _, _ in adoptions:
        _check_built_from_params(ws, stage, model)
    for _, _, _, v in adoptions:
        name = run_name(v, d.train.seed)
        path, busy = out / "runs" / f"{name}.json", out / "checkpoints" / name
        if path.exists() or busy.exists():
            raise FileExistsError(f"{path}: that run exists or is in flight; delete it (and "
                                  f"{busy}) to adopt the pipeline's")  # fmt: skip
    check_teachers(out, ws.digests())
    test = load_table(ws.split / "test.csv", ws.crops, params.student.input_size)
    return [_adopt(ws, params, test, out, stage, model, metrics, v)
            for stage, model, metrics, v in adoptions]  # fmt: skip


def _adopt(
    ws: Workspace, params: Params, test: FaceTable, out: Path, stage: str, model: Path,
    metrics: Path, variant: str,
) -> dict[str, Any]:  # fmt: skip
    """Write the pipeline's ``model`` (built by ``stage``) as the ``variant`` run of its seed,
    scored on ``test`` (the workspace's test part at the student's side)."""
    from agedistill.config import raw_params
    from agedistill.training.checkpoints import file_digest

    seed = params.distill.train.seed
    result = {"variant": variant, "seed": seed, "fit": json.loads(metrics.read_text()),
              "teachers": ws.digests(),
              "adopted": {"stage": stage, "model": str(model), "sha256": file_digest(model),
                          "threads": raw_params(ws.params)["distill"]["train"]["threads"]},
              "test": test_score(model, test, params.evaluate.cs_max)}  # fmt: skip
    write_json(result, out / "runs" / f"{run_name(variant, seed)}.json")
    return result


def rescore_runs(ws: Workspace, out: Path, dest: Path) -> list[dict[str, Any]]:
    """Score every finished run of ``out`` again with this code, into ``dest/runs``.

    The models are read, not retrained: a change in how an age is read off the predicted
    distribution (or in the metrics) applies to a whole grid in minutes. Each run keeps its fit
    and teachers, and records the model file and digest it was scored from; a model file whose
    digest is not the one its run recorded (an adopted model replaced since) is refused.
    """
    from agedistill.config import load_params
    from agedistill.data.tables import load_table
    from agedistill.training.checkpoints import file_digest

    if dest.resolve() == out.resolve():
        raise ValueError(f"{dest}: rescoring writes to another folder than the runs it reads")
    runs = sorted((out / "runs").glob("*.json"))
    if not runs:
        raise FileNotFoundError(f"{out / 'runs'}: no finished ablation runs to rescore")
    digests = ws.digests()
    check_teachers(out, digests)
    check_teachers(dest, digests)
    params = load_params(ws.params)
    test = load_table(ws.split / "test.csv", ws.crops, params.student.input_size)
    results = []
    for path in runs:
        run = json.loads(path.read_text())
        adopted = run.get("adopted")
        model = Path(adopted["model"]) if adopted else out / "models" / path.with_suffix(".pt").name
        if not model.exists():
            raise FileNotFoundError(f"{model}: the model of {path.name} is missing")
        digest = file_digest(model)
        if adopted and adopted["sha256"] != digest:
            raise ValueError(f"{model}: not the file {path.name} was adopted from (its digest "
                             f"changed); rerun adopt")  # fmt: skip
        rescored = {"from": str(path), "model": str(model), "sha256": digest}
        result = {**run, "test": test_score(model, test, params.evaluate.cs_max),
                  "rescored": rescored}  # fmt: skip
        write_json(result, dest / "runs" / path.name)
        results.append(result)
    return results


def _check_built_from_params(ws: Workspace, stage: str, model: Path) -> None:
    """Fail unless ``dvc.lock`` records ``model`` as built by ``stage``, in one process, from the
    params now in ``ws.params`` (every key the stage depends on)."""
    import hashlib

    import yaml

    from agedistill.config import raw_params

    lock_file = ws.params.parent / "dvc.lock"
    if not lock_file.exists():
        raise FileNotFoundError(f"{lock_file}: missing; adopt reads a finished pipeline's lock")
    locked_stage = (yaml.safe_load(lock_file.read_text()).get("stages") or {}).get(stage)
    if locked_stage is None:
        raise ValueError(f"{lock_file}: no {stage} stage; run the pipeline first (dvc repro)")
    raw = raw_params(ws.params)
    locked = locked_stage.get("params", {}).get(ws.params.name, {})
    changed = sorted(key for key, value in locked.items() if _dotted(raw, key) != value)
    if changed:
        raise ValueError(f"{ws.params}: {', '.join(changed)} differ from those {lock_file} "
                         f"built {model.name} with; run dvc repro first")  # fmt: skip
    if (raw.get("distributed") or {}).get("nproc", 1) != 1:
        raise ValueError(f"{lock_file}: {model.name} was trained data-parallel; no grid run is")
    rel = model.relative_to(ws.params.parent).as_posix()
    md5 = next((o["md5"] for o in locked_stage.get("outs", []) if o["path"] == rel), None)
    if md5 != hashlib.md5(model.read_bytes()).hexdigest():
        raise ValueError(f"{model}: not the file {lock_file} records; run dvc repro first")


def _dotted(raw: dict[str, Any], key: str) -> Any:
    """The value at a dotted params key (``distill.train``), or None where the path is absent."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def run_grid(
    ws: Workspace, variants: list[str], seeds: list[int], out: Path, jobs: int = 1,
    threads: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Train every (variant, seed) not already in ``out/runs``; ``jobs`` processes at a time."""
    ws.check()
    check_teachers(out, ws.digests())
    todo = [(v, s) for v, s in plan(variants, seeds)
            if not (out / "runs" / f"{run_name(v, s)}.json").exists()]  # fmt: skip
    threads = threads or max(1, (mp.cpu_count() or 1) // max(1, jobs))
    work = [(ws, v, s, out, threads) for v, s in todo]
    print(f"ablation: {len(todo)} run(s) to train, {jobs} at a time, {threads} thread(s) each")
    if jobs <= 1:
        return [_train_and_score(w) for w in work]
    with exit_on_sigterm(), mp.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        return list(pool.imap(_train_and_score, work))


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` for the block, so a worker pool's ``with`` terminates it.

    Without it, ``kill <grid>`` ends the parent only, and its training workers run on as orphans,
    writing checkpoints and model files no process will read.
    """

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_teachers(out: Path, digests: dict[str, str]) -> None:
    """Refuse to add runs to a grid whose finished runs were distilled from other teachers.

    A grid resumed in another session must rebuild bit-identical teachers (the pipeline is
    deterministic on the CPU); otherwise its rows would not be comparable.
    """
    for p in sorted((out / "runs").glob("*.json")):
        recorded = json.loads(p.read_text()).get("teachers")
        if recorded is not None and recorded != digests:
            raise ValueError(
                f"{p}: distilled from other teachers than the workspace's ({recorded} != "
                f"{digests}); rebuild the same teachers or start a new --out folder"
            )


def stats(values: list[float]) -> dict[str, float | None]:
    """Mean, std, standard error of the mean and count of a list of per-seed values.

    One value has no spread: ``std`` and ``sem`` are then None (``null`` in the metrics JSON).
    """
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else None
    sem = None if sd is None else sd / math.sqrt(n)
    return {"mean": statistics.mean(values), "std": sd, "sem": sem, "n": n}


def summarize(out: Path, class_teacher_mae: float | None = None) -> dict[str, Any]:
    """Mean, std and standard error of test MAE per variant from ``out/runs``.

    ``margin_in_sem`` is how far the variant's mean is below the class teacher's MAE, in units of
    the variant's standard error over seeds (> 2 is the bar the method must clear).
    """
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    if not runs:
        raise FileNotFoundError(f"{out / 'runs'}: no finished ablation runs")
    table: dict[str, Any] = {}
    for variant in VARIANTS:
        rows = [r for r in runs if r["variant"] == variant]
        if not rows:
            continue
        s = stats([r["test"]["mae"] for r in rows])
        s["mae_21_60"] = stats([r["test"]["mae_21_60"] for r in rows])["mean"]
        if all("mae_flip" in r["test"] for r in rows):  # runs scored with flip TTA (since a558355)
            flip = stats([r["test"]["mae_flip"] for r in rows])
            s["mae_flip"], s["mae_flip_std"] = flip["mean"], flip["std"]
        s["seeds"] = sorted(r["seed"] for r in rows)
        s["train_wall_s"] = statistics.median(r["fit"]["train_wall_s"] for r in rows)
        if class_teacher_mae is not None and s["n"] > 1:
            s["margin_in_sem"] = (class_teacher_mae - s["mean"]) / s["sem"]
        sources = set.intersection(*(set(r["test"].get("by_source", {})) for r in rows))
        if len(sources) > 1:
            s["mae_by_source"] = {
                src: stats([r["test"]["by_source"][src]["mae"] for r in rows])
                for src in sorted(sources)
            }
        table[variant] = s
    for variant, s in table.items():  # the margin over the non-distilled twin, in SE of the gap
        if variant != "none":
            s.update(_gain(s, table.get("none"), "gain_over_twin"))
    if "both" in table:  # the hint's own share: both signals against soft targets alone
        table["both"].update(_gain(table["both"], table.get("soft"), "gain_over_soft"))
    if class_teacher_mae is not None:
        table["class_teacher"] = {"mae": class_teacher_mae}
    return table


def _gain(s: dict[str, Any], base: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """How far ``s``'s mean is below ``base``'s, and that gap in Welch's SE of the difference.

    Empty when either side has a single seed (no standard error).
    """
    if not base or s["n"] < 2 or base["n"] < 2:
        return {}
    gap, gap_se = base["mean"] - s["mean"], math.hypot(s["sem"], base["sem"])
    return {key: gap, f"{key}_in_se": gap / gap_se if gap_se else None}


def format_table(table: dict[str, Any]) -> str:
    """The ablation as a Markdown table."""
    variants = {v: s for v, s in table.items() if v != "class_teacher"}
    sources = sorted(set().union(*(s.get("mae_by_source", {}) for s in variants.values())))
    head = ["model", "test MAE (mean ± std)", "seeds", "MAE 21-60", "below class teacher, in SE",
            "gain over twin (none), in SE", "gain over soft, in SE",
            *(f"{src} MAE" for src in sources)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ct = table.get("class_teacher", {}).get("mae")
    if ct is not None:
        lines.append(f"| class teacher (no distillation) | {ct:.3f} | 1 |" + " |" * (len(head) - 3))
    for variant, s in variants.items():
        margin = s.get("margin_in_sem")
        spread = "" if s["std"] is None else f" ± {s['std']:.3f}"  # one seed has no spread
        per_source = [_mean_std(s.get("mae_by_source", {}).get(src)) for src in sources]
        cells = [f"student, {variant}", f"{s['mean']:.3f}{spread}", str(s["n"]),
                 f"{s['mae_21_60']:.3f}", "" if margin is None else f"{margin:.1f}",
                 _gain_cell(s, "gain_over_twin"), _gain_cell(s, "gain_over_soft"),
                 *per_source]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gain_cell(s: dict[str, Any], key: str) -> str:
    gain, in_se = s.get(key), s.get(f"{key}_in_se")
    if gain is None:
        return ""
    return f"{gain:+.3f}" + ("" if in_se is None else f" ({in_se:.1f})")


def _mean_std(s: dict[str, Any] | None) -> str:
    if s is None:
        return ""
    return f"{s['mean']:.3f}" + ("" if s["std"] is None else f" ± {s['std']:.3f}")


def plot_table(table: dict[str, Any], path: Path) -> Path:
    """Bar chart of mean test MAE per variant with ±1 SE bars and the class teacher as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v for v in table if v != "class_teacher"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(names, [table[v]["mean"] for v in names],
           yerr=[table[v]["sem"] or 0 for v in names],
           capsize=4, color="#4c72b0")  # fmt: skip
    if "class_teacher" in table:
        ax.axhline(table["class_teacher"]["mae"], color="#c44e52", ls="--", label="class teacher")
        ax.legend(loc="lower right")
    lo = min(table[v]["mean"] for v in names)
    ax.set_ylim(lo - 0.3, None)
    ax.set_ylabel("test MAE (years)")
    ax.set_title("Student by distillation signal (mean ± SE over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
