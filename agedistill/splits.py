"""Seeded, leakage-free train/val/test splits of the aligned manifest.

Rows are first joined into *groups* that must never be separated: rows of the same subject and rows
with identical image content (same SHA-1) end up in one group (union-find). Groups, not rows, are
then assigned to parts, stratified over age bins. Methods:

* ``stratified``: random val/test fractions (or a fixed test count) per age bin;
* ``kfold``: ``folds`` age-stratified folds of groups; fold ``fold`` is the test part;
* ``loso``: leave-one-subject-out (the FG-NET protocol); subject number ``fold`` is the test part.

Ages outside ``[min_age, max_age]`` are clipped to the range (``out_of_range: clip``) or excluded
and listed with the reason (``out_of_range: drop``); the model's classes are the integer ages of
the range, so a clipped 110-year-old is trained and scored as ``max_age``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PARTS = ("train", "val", "test")


class SplitError(ValueError):
    """The requested split is impossible for this data (or would leak)."""


def _groups(df: pd.DataFrame) -> np.ndarray:
    """Union-find over shared subject and shared content hash; returns a group id per row."""
    parent = list(range(len(df)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for col in ("subject", "sha1"):
        if col not in df:
            continue
        first: dict[str, int] = {}
        for i, v in enumerate(df[col].tolist()):
            if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
                continue
            if v in first:
                parent[find(i)] = find(first[v])
            else:
                first[v] = i
    return np.array([find(i) for i in range(len(df))])


def apply_age_range(
    df: pd.DataFrame, min_age: int, max_age: int, out_of_range: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clip or drop ages outside the range; returns ``(kept, excluded)`` (excluded has a reason)."""
    df = df.copy()
    outside = (df["age"] < min_age) | (df["age"] > max_age)
    if out_of_range == "clip":
        df["age"] = df["age"].clip(min_age, max_age)
        return df, df.iloc[0:0].assign(reason=[])
    excluded = df[outside].assign(reason=f"age outside [{min_age}, {max_age}]")
    return df[~outside].copy(), excluded


def _age_bins(ages: pd.Series, width: int) -> np.ndarray:
    return (ages.to_numpy() // width).astype(int)


def _assign_stratified(gid, bins, rng, val_fraction, test_fraction, test_size, n_rows):
    groups = pd.DataFrame({"gid": gid, "bin": bins}).groupby("gid")["bin"].median().astype(int)
    test_frac = test_size / n_rows if test_size else test_fraction
    if test_frac + val_fraction >= 1:
        raise SplitError("val and test parts leave nothing to train on")
    part = {}
    for _, members in groups.groupby(groups):
        ids = members.index.to_numpy().copy()
        rng.shuffle(ids)
        # cumulative rounding keeps the overall fractions exact even with many tiny bins
        n = len(ids)
        n_test = int(round(n * test_frac + rng.random() - 0.5))
        n_val = int(round(n * val_fraction + rng.random() - 0.5))
        n_test, n_val = max(0, min(n_test, n)), max(0, min(n_val, n - max(0, n_test)))
        for g in ids[:n_test]:
            part[g] = "test"
        for g in ids[n_test : n_test + n_val]:
            part[g] = "val"
        for g in ids[n_test + n_val :]:
            part[g] = "train"
    return np.array([part[g] for g in gid])


def _assign_kfold(gid, bins, rng, folds, fold, val_fraction):
    if fold >= folds:
        raise SplitError(f"split.fold={fold} but only {folds} folds")
    groups = pd.DataFrame({"gid": gid, "bin": bins}).groupby("gid")["bin"].median().astype(int)
    fold_of = {}
    offset = 0
    for _, members in groups.groupby(groups):
        ids = members.index.to_numpy().copy()
        rng.shuffle(ids)
        for j, g in enumerate(ids):
            fold_of[g] = (j + offset) % folds
        offset += len(ids)
    part = {}
    rest = [g for g in fold_of if fold_of[g] != fold]
    rng.shuffle(rest)
    n_val = int(round(len(rest) * val_fraction))
    val = set(rest[:n_val])
    for g, f in fold_of.items():
        part[g] = "test" if f == fold else ("val" if g in val else "train")
    return np.array([part[g] for g in gid]), np.array([fold_of[g] for g in gid])


def make_split(
    manifest: pd.DataFrame,
    *,
    method: str = "stratified",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    test_size: int = 0,
    folds: int = 5,
    fold: int = 0,
    age_bin: int = 5,
) -> pd.DataFrame:
    """Return ``manifest`` with a ``split`` column (train/val/test) and a ``group`` column."""
    if manifest.empty:
        raise SplitError("the manifest has no rows to split")
    df = manifest.reset_index(drop=True).copy()
    rng = np.random.default_rng(seed)
    gid = _groups(df)
    bins = _age_bins(df["age"], age_bin)
    if method == "stratified":
        df["split"] = _assign_stratified(
            gid, bins, rng, val_fraction, test_fraction, test_size, len(df)
        )
    elif method == "kfold":
        df["split"], df["fold"] = _assign_kfold(gid, bins, rng, folds, fold, val_fraction)
    elif method == "loso":
        if "subject" not in df or df["subject"].isna().any():
            raise SplitError("split.method=loso needs a subject for every row (e.g. FG-NET)")
        subjects = sorted(df["subject"].astype(str).unique())
        if fold >= len(subjects):
            raise SplitError(f"split.fold={fold} but only {len(subjects)} subjects")
        held_out = subjects[fold]
        is_test = df["subject"].astype(str).to_numpy() == held_out
        test_groups = set(gid[is_test])
        if any(g in test_groups for g in gid[~is_test]):
            raise SplitError(f"subject {held_out} shares images with other subjects")
        rest = np.unique(gid[~np.isin(gid, list(test_groups))])
        rng.shuffle(rest)
        val = set(rest[: int(round(len(rest) * val_fraction))])
        df["split"] = ["test" if g in test_groups else ("val" if g in val else "train") for g in gid]
    else:
        raise SplitError(f"unknown split method {method!r}")
    df["group"] = gid
    check_no_leakage(df)
    for p in PARTS:
        if not (df["split"] == p).any() and not (p == "val" and val_fraction == 0):
            raise SplitError(f"the {p} part is empty: too few images or groups for these fractions")
    return df


def check_no_leakage(df: pd.DataFrame) -> None:
    """Raise :class:`SplitError` if a subject or an identical image appears in two parts."""
    for col in ("subject", "sha1"):
        if col not in df:
            continue
        known = df[df[col].notna() & (df[col].astype(str) != "")]
        sides = known.groupby(col)["split"].nunique()
        leaked = sides[sides > 1]
        if len(leaked):
            raise SplitError(f"{len(leaked)} {col} value(s) on two sides, e.g. {leaked.index[0]}")
