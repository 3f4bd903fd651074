"""The ``evaluate`` stage: score the student, its twin, the class and the ranking teacher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agedistill.config import AgesParams, EvaluateParams
from agedistill.data.tables import FaceTable
from agedistill.evaluation.metrics import (
    cpu_latency,
    cumulative_score,
    file_size_mb,
    grouped_mae,
    mae,
    std_coverage,
)
from agedistill.models.files import load_model
from agedistill.models.folding import fold_batchnorm
from agedistill.models.inputs import normalize, resize_faces
from agedistill.models.nets import count_parameters
from agedistill.models.predictions import STD_SCALE_KEY, predict_ages_std_and_flipped
from agedistill.serving.inference import for_inference

MODELS = ("student", "twin", "class_teacher", "rank_teacher")


@torch.inference_mode()
def _pooled_features(
    model, images: torch.Tensor, size: int | None = None, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's pooled features of the faces (resized to ``size``) and of their mirrors.

    Read as the distill stage reads the teacher: BatchNorm folded, channels-last (an exact
    rewrite, to float rounding, about 3x faster than the plain module on 2 cores).
    """
    pool = fold_batchnorm(model.eval()).to(memory_format=torch.channels_last).backbone
    pool = pool.forward_features
    plain, mirrored = [], []
    for i in range(0, len(images), batch):
        x = normalize(images[i : i + batch])
        if size:
            x = resize_faces(x, size)
        plain.append(pool(x)[0])
        mirrored.append(pool(x.flip(-1))[0])
    return torch.cat(plain).double(), torch.cat(mirrored).double()


def _ridge(f_tr: torch.Tensor, y: torch.Tensor, f_te: torch.Tensor, ridge: float) -> np.ndarray:
    """Fit a ridge regression on standardised features ``f_tr`` and predict for ``f_te``."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    x_tr = torch.cat([(f_tr - mu) / sd, torch.ones(len(f_tr), 1, dtype=torch.float64)], 1)
    x_te = torch.cat([(f_te - mu) / sd, torch.ones(len(f_te), 1, dtype=torch.float64)], 1)
    reg = ridge * len(x_tr) * torch.eye(x_tr.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0  # do not shrink the intercept
    w = torch.linalg.solve(x_tr.T @ x_tr + reg, x_tr.T @ y.double())
    return (x_te @ w).numpy()


def linear_probe(
    model, train: FaceTable, test: FaceTable, ridge: float = 1e-2, size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression of age on the ranking teacher's frozen pooled features.

    Returns the test predictions of two probes: one on each face's features, and one (its flip
    counterpart) on each face's features averaged with its mirror image's, fitted and read alike.
    ``size``: the teacher's input side, when the faces have another (they are resized for it).
    """
    tr, tr_m = _pooled_features(model, train.images, size)
    te, te_m = _pooled_features(model, test.images, size)
    return _ridge(tr, train.ages, te, ridge), _ridge(
        (tr + tr_m) / 2, train.ages, (te + te_m) / 2, ridge
    )


def probe_ages(
    model, train: FaceTable, test: FaceTable, ages: AgesParams, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ranking teacher's ages for ``test`` read once and with flip, as ``evaluate`` scores it.

    Its :func:`linear_probe` at the teacher's input ``size``, clipped to the age range ``ages``.
    """
    plain, flip = linear_probe(model, train, test, size=size)
    return (np.clip(plain, ages.min_age, ages.max_age),
            np.clip(flip, ages.min_age, ages.max_age))  # fmt: skip


def score(
    pred: np.ndarray,
    test: FaceTable,
    cs_max: int,
    pred_flip: np.ndarray | None = None,
    std: np.ndarray | None = None,
    *,
    std_flip: np.ndarray | None = None,
) -> dict[str, Any]:
    """MAE, CS(0..cs_max) and grouped MAE of predictions on ``test``, overall and per source.

    ``pred_flip``: the same model's predictions with test-time flip augmentation (what
    ``predict`` reports by default), scored as ``mae_flip`` and ``mae_21_60_flip``. ``std``: each
    prediction's (calibrated) ``age_std``, scored as ``std_coverage``, the share of true ages
    within ``pred`` +- ``std``; ``std_flip`` the same for ``pred_flip`` (``std_coverage_flip``).

    Where ``test.rows`` has a ``source`` column, ``by_source`` maps each source name to the same
    metrics on that source's rows alone (from the same predictions), plus ``n`` and
    ``worst_group_ratio``: its worst age group's MAE over its MAE (``worst_group_ratio_flip``:
    the same of ``pred_flip``). A metric a source has no rows for (MAE 21-60 of a source without
    adults, an age group it lacks) is left out there.
    """
    true = test.ages.numpy()
    out = _metrics(pred, true, test.rows, cs_max, pred_flip, std=std, std_flip=std_flip)
    if "source" in test.rows:
        out["by_source"] = by_source(
            pred, true, test.rows, cs_max, pred_flip, std, std_flip=std_flip
        )
    return out


def _worst_group_ratio(groups: dict[str, float], overall: float) -> float:
    """The worst age group's MAE over the MAE of all rows (1.0 when every prediction is exact)."""
    return max(groups.values()) / overall if overall > 0 else 1.0


def by_source(
    pred: np.ndarray,
    true: np.ndarray,
    rows: pd.DataFrame,
    cs_max: int,
    pred_flip: np.ndarray | None = None,
    std: np.ndarray | None = None,
    *,
    std_flip: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`score`'s metrics per value of ``rows["source"]`` (sorted by name), with ``n``."""
    sources = rows["source"].astype("string").fillna("unknown").to_numpy(dtype=object)
    out = {}
    for name in sorted(set(sources)):
        keep = sources == name
        p, t, r = pred[keep], true[keep], rows[keep]
        flip, spread, spread_flip = (
            None if a is None else a[keep] for a in (pred_flip, std, std_flip)
        )
        m = _metrics(p, t, r, cs_max, flip, std=spread, std_flip=spread_flip)
        m = {k: v for k, v in m.items() if not (isinstance(v, float) and np.isnan(v))}
        m["worst_group_ratio"] = _worst_group_ratio(m["mae_age_group"], m["mae"])
        if flip is not None:  # the flip reading's groups: _metrics groups the plain one only
            flip_groups = grouped_mae(flip, r)["age_group"]
            m["worst_group_ratio_flip"] = _worst_group_ratio(flip_groups, m["mae_flip"])
        out[str(name)] = {"n": int(keep.sum()), **m}
    return out


def _metrics(
    pred: np.ndarray,
    true: np.ndarray,
    rows: pd.DataFrame,
    cs_max: int,
    pred_flip: np.ndarray | None,
    *,
    std: np.ndarray | None = None,
    std_flip: np.ndarray | None = None,
) -> dict[str, Any]:
    cs = cumulative_score(pred, true, cs_max)
    adult = (true >= 21) & (true <= 60)

    def adult_mae(p: np.ndarray) -> float:
        return mae(p[adult], true[adult]) if adult.any() else float("nan")

    extra = {} if pred_flip is None else {
        "mae_flip": mae(pred_flip, true), "mae_21_60_flip": adult_mae(pred_flip)
    }  # fmt: skip
    if std is not None:
        extra["std_coverage"] = std_coverage(pred, std, true)
    if pred_flip is not None and std_flip is not None:
        extra["std_coverage_flip"] = std_coverage(pred_flip, std_flip, true)
    return {
        "mae": mae(pred, true),
        "mae_21_60": adult_mae(pred),
        **extra,
        **{f"cs{t}": v for t, v in enumerate(cs)},
        **{f"mae_{kind}": groups for kind, groups in grouped_mae(pred, rows).items()},
    }


def evaluate_models(
    model_paths: dict[str, str | Path],
    tables: Callable[[int], tuple[FaceTable, FaceTable]],
    ages: AgesParams,
    params: EvaluateParams,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics per model and a table of per-face predictions (one column per model).

    ``tables(side)`` gives the train and test faces (the same rows for every side) at a model's
    input side; the first model's test rows label the predictions table.

    ``ages`` bounds the ranking teacher's probe; ``params`` sets the cumulative score's range and
    the latency measurement.

    The age models also report ``std_coverage``: the share of test faces whose true age lies
    within the predicted age +- its calibrated ``age_std`` (the model's ``age_std_scale``).

    The metrics are those of each model reading each face once; ``mae_flip`` and
    ``mae_21_60_flip`` are its MAE with test-time flip augmentation, at twice the cost: for the
    classifiers each face is also fed mirrored and the two age distributions averaged (what
    ``agedistill predict`` reads by default), with ``std_coverage_flip`` and, per source,
    ``worst_group_ratio_flip``; the ranking teacher's probe reads each face's features averaged
    with its mirror image's. Where the test
    rows name their ``source``, ``by_source`` holds them per source (see :func:`score`).

    Every model reads the faces with its BatchNorm folded into its convolutions and its weights
    channels-last, as ``predict`` and ``distill`` run them: an exact rewrite of the eval-mode
    network (outputs agree to float rounding) at a fraction of the plain module's time.
    """
    cs_max, latency_batch, latency_repeats = (
        params.cs_max,
        params.latency_batch,
        params.latency_repeats,
    )
    results: dict[str, Any] = {}
    preds: pd.DataFrame | None = None
    for name, path in model_paths.items():
        model, config = load_model(path)
        train, test = tables(config["input_size"])
        if preds is None:
            preds = pd.DataFrame({"crop": test.rows["crop"], "true_age": test.ages.numpy()})
        std = std_flip = None
        if config["arch"] == "rank_teacher":
            pred, pred_flip = probe_ages(model, train, test, ages, config["input_size"])
            cost_model = model.backbone
        else:
            fast = for_inference(model)  # as predict reads: BatchNorm folded, channels-last
            pred, std, pred_flip, std_flip = (
                p.numpy()
                for p in predict_ages_std_and_flipped(fast, test.images, config["min_age"])
            )
            scale = float(config.get(STD_SCALE_KEY, 1.0))  # the calibrated age_std
            std, std_flip = std * scale, std_flip * scale
            cost_model = model
        preds[name] = pred
        results[name] = {
            **score(pred, test, cs_max, pred_flip, std, std_flip=std_flip),
            "params": count_parameters(cost_model),
            "file_mb": file_size_mb(path),
            # as predict runs it (BatchNorm folded, channels-last), and the plain module
            **cpu_latency(
                for_inference(cost_model), config["input_size"], latency_batch, latency_repeats
            ),
            "faces_per_s_eager": cpu_latency(
                cost_model, config["input_size"], latency_batch, latency_repeats
            )["faces_per_s"],
        }
    return results, preds


def write_plots(
    results: dict[str, Any], preds: pd.DataFrame, plots_dir: str | Path
) -> dict[str, Path]:
    """DVC plot tables (CSV) and the same figures as PNG; returns the PNG paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    names = list(results)
    cs_max = max(int(k[2:]) for k in results[names[0]] if k.startswith("cs"))
    cs = pd.DataFrame({"theta": range(cs_max + 1)})
    for n in names:
        cs[n] = [results[n][f"cs{t}"] for t in range(cs_max + 1)]
    cs.to_csv(plots_dir / "cs_curve.csv", index=False)
    groups = pd.DataFrame(
        [{"age_group": g, **{n: results[n]["mae_age_group"].get(g) for n in names}}
         for g in results[names[0]]["mae_age_group"]]
    )  # fmt: skip
    groups.to_csv(plots_dir / "mae_by_age_group.csv", index=False)
    per_source = {n: results[n].get("by_source", {}) for n in names}
    sources = pd.DataFrame(
        [{"source": src, **{n: per_source[n].get(src, {}).get("mae") for n in names}}
         for src in per_source[names[0]]],
        columns=["source", *names],
    )  # fmt: skip
    sources.to_csv(plots_dir / "mae_by_source.csv", index=False)
    preds.to_csv(plots_dir / "predictions.csv", index=False)

    pngs = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    for n in names:
        ax.plot(cs["theta"], cs[n], marker="o", label=f"{n} (MAE {results[n]['mae']:.2f})")
    ax.set(
        xlabel="error threshold θ (years)", ylabel="CS(θ)", title="Cumulative score", ylim=(0, 1)
    )
    ax.grid(alpha=0.3)
    ax.legend()
    pngs["cs_curve"] = _save(fig, plots_dir / "cs_curve.png")

    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        ax.scatter(preds["true_age"], preds[n], s=4, alpha=0.4)
        hi = float(max(preds["true_age"].max(), preds[n].max()))
        ax.plot([0, hi], [0, hi], color="k", lw=1)
        ax.set(xlabel="true age", ylabel="predicted age", title=n)
    pngs["pred_vs_true"] = _save(fig, plots_dir / "pred_vs_true.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    for i, n in enumerate(names):
        ax.bar(x + i * width, groups[n].fillna(0), width, label=n)
    ax.set_xticks(x + width * (len(names) - 1) / 2, groups["age_group"])
    ax.set(xlabel="age group", ylabel="MAE (years)", title="MAE per age group")
    ax.legend()
    pngs["mae_by_age_group"] = _save(fig, plots_dir / "mae_by_age_group.png")

    fig, ax = plt.subplots(figsize=(6, 1.5 + 0.6 * len(sources)))
    height = 0.8 / len(names)
    y = np.arange(len(sources))
    for i, n in enumerate(names):
        ax.barh(y + i * height, sources[n].fillna(0), height, label=n)
    ax.set_yticks(y + height * (len(names) - 1) / 2, sources["source"])
    ax.invert_yaxis()  # sources top to bottom in the table's order
    ax.set(xlabel="MAE (years)", title="MAE per source")
    ax.legend()
    pngs["mae_by_source"] = _save(fig, plots_dir / "mae_by_source.png")
    return pngs


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def summary_table(results: dict[str, Any]) -> str:
    """A small text table of the headline numbers per model ("MAE flip": with flip TTA).

    With more than one source, a second table follows: per source and model, the number of test
    faces, MAE, CS(5), MAE 21-60 and the worst age group's MAE over that source's MAE.
    """
    head = (
        f"{'model':<15}{'MAE':>7}{'MAE flip':>10}{'CS(5)':>8}{'params':>10}{'MB':>7}{'faces/s':>10}"
    )
    lines = [head, "-" * len(head)]
    for n, r in results.items():
        flip = r.get("mae_flip", float("nan"))  # metrics written before it was scored lack it
        lines.append(
            f"{n:<15}{r['mae']:>7.2f}{flip:>10.2f}{r['cs5']:>8.3f}{r['params']:>10,}"
            f"{r['file_mb']:>7.2f}{r['faces_per_s']:>10.0f}"
        )
    sources = {s for r in results.values() for s in r.get("by_source", {})}
    if len(sources) > 1:
        lines += ["", *_source_table(results, sorted(sources))]
    return "\n".join(lines)


def _source_table(results: dict[str, Any], sources: list[str]) -> list[str]:
    """Lines of the per-source table (``worst group``: its MAE / the source's MAE, and which)."""
    w = max(len("source"), *map(len, sources)) + 2
    head = (
        f"{'source':<{w}}{'model':<15}{'n':>6}{'MAE':>7}{'CS(5)':>8}{'MAE 21-60':>11}  worst group"
    )
    lines = [head, "-" * len(head)]
    for src in sources:
        for n, r in results.items():
            s = r.get("by_source", {}).get(src)
            if s is None:
                continue
            groups = s["mae_age_group"]
            worst = max(groups, key=groups.get)
            adult = s.get("mae_21_60", float("nan"))  # left out for a source without adults
            lines.append(
                f"{src:<{w}}{n:<15}{s['n']:>6}{s['mae']:>7.2f}{s['cs5']:>8.3f}{adult:>11.2f}"
                f"  {s['worst_group_ratio']:.2f}x ({worst})"
            )
    return lines
