"""Seeded, leakage-free train/val/test splits of the aligned manifest.

Rows are first joined into *groups* that must never be separated: rows of the same subject and rows
with identical image content (same SHA-1) end up in one group (union-find). Groups, not rows, are
then assigned to parts, stratified over age bins. Methods:

* ``stratified``: random val/test fractions (or a fixed test count) per source and age bin; a
  source's own test part (``test_parts``: APPA-REAL's ``valid``) is its test part instead;
* ``cross_dataset``: every face of one source (``holdout``) is the test part, the other sources
  are split into train and val per source and age bin (the cross-dataset protocol);
* ``kfold``: ``folds`` age-stratified folds of groups; fold ``fold`` is the test part;
* ``loso``: leave-one-subject-out (the FG-NET protocol); subject number ``fold`` is the test part.

Each source is split with its own random stream (the first source's is the one a single-source
manifest gets), so adding a source leaves the first one's parts as they were. A group that spans
two sources (the same image in both) belongs to the source of its first row.

Ages outside ``[min_age, max_age]`` (the ``ages`` params) are clipped to the range
(``out_of_range: clip``: a 116-year-old is trained and scored as ``max_age``, a negative age as
``min_age``) or excluded (``out_of_range: drop``) and written to ``excluded.csv`` with the reason;
the models' classes are the integer ages of the range. The stage writes ``train.csv``,
``val.csv``, ``test.csv`` (and ``excluded.csv``) so a split is a file, not a seed to re-derive.

Faces of unlabelled sources (``reader: unlabelled``: no ages) are taken out before all this
(:func:`separate_unlabelled`) and written to ``unlabelled.csv`` (:func:`unlabelled_part`), for
distillation's label-free losses only; an exact copy (same SHA-1) of a labelled face is dropped
from it, so that no test face is ever trained on.

Leakage guard: :func:`check_no_leakage` runs on every split; when the data cannot be split without
leakage or without an empty part (one subject, loso without subjects, too few groups for the
folds), :class:`SplitError` says why and the stage exits with that message.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

PARTS = ("train", "val", "test")
UNLABELLED = "unlabelled"  # the split value (and table name) of unlabelled faces


class SplitError(ValueError):
    """The requested split is impossible for this data (or would leak)."""


def _subject_keys(df: pd.DataFrame) -> pd.Series | None:
    """Subject ids qualified by their source (subject 78 of two datasets is two people)."""
    if "subject" not in df:
        return None
    subject = df["subject"].astype("string").replace("", pd.NA)
    if "source" in df:
        return (df["source"].astype("string") + "/" + subject).astype(object)
    return subject.astype(object)


def _known(values: list) -> list:
    """``None`` for every missing value (None, NaN, pd.NA), the value otherwise."""
    return [None if pd.isna(v) else v for v in values]


def _groups(df: pd.DataFrame) -> np.ndarray:
    """Union-find over shared subject and shared content hash; returns a group id per row."""
    parent = list(range(len(df)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keys = [_subject_keys(df), df.get("sha1")]
    for col in keys:
        if col is None:
            continue
        first: dict[str, int] = {}
        for i, v in enumerate(_known(col.tolist())):
            if v is None or v == "":
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


def separate_unlabelled(
    manifest: pd.DataFrame, unlabelled_sources: Collection[str]
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Take the faces of unlabelled sources out of ``manifest`` before its ages are used.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The aligned faces (``source``, ``age``, optional ``sha1``).
    unlabelled_sources : collection of str
        The ``source`` values of the sources read with ``reader: unlabelled``.

    Returns
    -------
    labelled : pandas.DataFrame
        The other rows, to split (``age`` as integers).
    unlabelled : pandas.DataFrame
        The rows of ``unlabelled_sources`` less exact copies (same ``sha1``) of a labelled row.
    duplicates : int
        How many unlabelled rows were dropped as such copies.

    Raises
    ------
    SplitError
        When every face is unlabelled, or a labelled row has no age.
    """
    is_unlabelled = _sources(manifest).isin(set(unlabelled_sources))
    labelled, unlabelled = manifest[~is_unlabelled].copy(), manifest[is_unlabelled].copy()
    if labelled.empty and not unlabelled.empty:
        raise SplitError(
            f"all {len(unlabelled)} faces are from unlabelled sources: the split needs labelled "
            "faces (a source with reader utkface, fgnet or csv)"
        )
    labelled["age"] = _integer_ages(labelled)
    if "sha1" not in manifest:
        return labelled, unlabelled, 0
    copy = unlabelled["sha1"].isin(set(labelled["sha1"].dropna()))
    return labelled, unlabelled[~copy], int(copy.sum())


def _integer_ages(labelled: pd.DataFrame) -> pd.Series:
    """The ages of labelled rows as integers (read beside unlabelled rows' empty ages, they are
    floats); a labelled row without an age is a :class:`SplitError`."""
    ages = labelled["age"]
    missing = ages.isna()
    if missing.any():
        example = labelled.loc[missing].iloc[0].get("path", labelled.index[missing][0])
        raise SplitError(f"{int(missing.sum())} labelled face(s) have no age, e.g. {example}")
    if ages.dtype.kind == "f" and (ages == ages.round()).all():
        return ages.astype("int64")
    return ages


def unlabelled_part(unlabelled: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The ``unlabelled.csv`` table: ``unlabelled`` rows with the columns of the split ``table``.

    ``split`` is :data:`UNLABELLED`; ``group`` holds their own leakage-free groups (shared subject
    or content), numbered after ``table``'s; ``age`` (and ``fold``) are empty.
    """
    df = unlabelled.reset_index(drop=True).copy()
    df["split"] = UNLABELLED
    start = int(table["group"].max()) + 1 if len(table) else 0
    df["group"] = _groups(df) + start if len(df) else pd.Series(dtype="int64")
    df["age"] = df["age"].astype("Int64")
    return df.reindex(columns=table.columns)


def split_counts(
    table: pd.DataFrame, excluded: pd.DataFrame, unlabelled: pd.DataFrame, duplicates: int
) -> dict:
    """The split stage's metrics: rows per part, excluded rows, unlabelled rows and the exact
    copies of labelled faces dropped from them, and the rows per part of each source."""
    counts: dict = {p: int((table["split"] == p).sum()) for p in PARTS}
    counts |= {
        "excluded": len(excluded),
        UNLABELLED: len(unlabelled),
        "unlabelled_duplicates": duplicates,
    }
    if "source" in table:
        by_source = table.groupby(["source", "split"]).size().unstack(fill_value=0)
        counts["by_source"] = {
            src: {p: int(row.get(p, 0)) for p in PARTS} for src, row in by_source.iterrows()
        }
        for src, n in unlabelled.groupby("source").size().items():
            counts["by_source"][src] = {UNLABELLED: int(n)}
    return counts


def _age_bins(ages: pd.Series, width: int) -> np.ndarray:
    return (ages.to_numpy() // width).astype(int)


def _group_bins(gid: np.ndarray, bins: np.ndarray) -> pd.Series:
    """The age bin of each group (median over its rows), indexed by group id."""
    return pd.DataFrame({"gid": gid, "bin": bins}).groupby("gid")["bin"].median().astype(int)


def _dithered(x: float, rng: np.random.Generator) -> int:
    # random rounding: many small bins still give the requested fraction in expectation
    return int(np.floor(x + rng.random()))


def _assign_stratified(
    gid: np.ndarray,
    bins: np.ndarray,
    rng: np.random.Generator,
    val_fraction: float,
    test_fraction: float,
) -> np.ndarray:
    if test_fraction + val_fraction >= 1:
        raise SplitError("val and test parts leave nothing to train on")
    groups = _group_bins(gid, bins)
    part: dict[int, str] = {}
    for _, members in groups.groupby(groups):
        ids = members.index.to_numpy().copy()
        rng.shuffle(ids)
        n = len(ids)
        n_test = min(_dithered(n * test_fraction, rng), n)
        n_val = min(_dithered(n * val_fraction, rng), n - n_test)
        part.update(dict.fromkeys(ids[:n_test], "test"))
        part.update(dict.fromkeys(ids[n_test : n_test + n_val], "val"))
        part.update(dict.fromkeys(ids[n_test + n_val :], "train"))
    return np.array([part[g] for g in gid])


def listed_rows(df: pd.DataFrame, root: str, files: Collection[str]) -> np.ndarray:
    """Which rows' ``path`` is one of ``files`` (paths relative to the folder ``root``)."""
    wanted = {os.path.normpath(f) for f in files}
    base = os.path.abspath(root)
    rel = [os.path.normpath(os.path.relpath(os.path.abspath(p), base)) for p in df["path"]]
    return np.array([r in wanted for r in rel], dtype=bool)


def read_test_list(path: str | os.PathLike) -> list[str]:
    """The files of a test list: a CSV with a ``file`` column (paths relative to its source)."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as e:
        raise SplitError(f"{path}: cannot read the test list ({e})") from None
    if "file" not in table:
        raise SplitError(f"{path}: a test list needs a 'file' column, got {list(table.columns)}")
    return table["file"].astype(str).tolist()


def _sources(df: pd.DataFrame) -> pd.Series:
    return df["source"].astype(str) if "source" in df else pd.Series("", index=df.index)


def _assign_per_source(
    df: pd.DataFrame,
    gid: np.ndarray,
    bins: np.ndarray,
    opts: _SourceSplit,
) -> np.ndarray:
    """Stratified (or cross-dataset) parts, each source on its own random stream."""
    sources = _sources(df).to_numpy()
    owner = pd.Series(sources).groupby(gid).first()  # a group's source: that of its first row
    part = np.empty(len(df), dtype=object)
    fixed = np.zeros(len(df), dtype=bool)
    given = (
        df["source_part"].astype("string").fillna("").to_numpy()
        if "source_part" in df
        else np.full(len(df), "", dtype=object)
    )
    for src, (root, files) in opts.test_lists.items():
        fixed |= (sources == src) & listed_rows(df, root, files)
    for src, value in opts.test_parts.items():
        rows = (sources == src) & (given == value)
        if not rows.any():  # a typo would otherwise leave the source without a test part
            found = sorted(set(given[sources == src]) - {""})
            raise SplitError(
                f"source {src!r}: no row has test_part {value!r} in its table's split column "
                f"(found {found or 'no split column'})"
            )
        fixed |= rows
    if opts.holdout is not None:
        fixed |= sources == opts.holdout
    fixed_groups = set(gid[fixed].tolist())
    is_fixed = np.array([g in fixed_groups for g in gid])
    part[is_fixed] = "test"
    row_owner = owner.loc[gid].to_numpy()
    for i, src in enumerate(dict.fromkeys(sources)):
        rows = (row_owner == src) & ~is_fixed
        if not rows.any():
            continue
        rng = np.random.default_rng(opts.seed if i == 0 else [opts.seed, i])
        has_test_part = opts.holdout is not None or src in opts.test_parts or src in opts.test_lists
        n = int((row_owner == src).sum())
        test_frac = 0.0 if has_test_part else (
            opts.test_size / n if opts.test_size else opts.test_fraction
        )  # fmt: skip
        part[rows] = _assign_stratified(gid[rows], bins[rows], rng, opts.val_fraction, test_frac)
    return part


@dataclass(frozen=True)
class _SourceSplit:
    seed: int
    val_fraction: float
    test_fraction: float
    test_size: int
    test_parts: dict[str, str]
    holdout: str | None
    test_lists: dict[str, tuple[str, Collection[str]]]


def _assign_kfold(
    gid: np.ndarray,
    bins: np.ndarray,
    rng: np.random.Generator,
    folds: int,
    fold: int,
    val_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    if fold >= folds:
        raise SplitError(f"split.fold={fold} but only {folds} folds")
    groups = _group_bins(gid, bins)
    if len(groups) < folds:
        raise SplitError(f"{len(groups)} leakage-free groups cannot fill {folds} folds")
    fold_of: dict[int, int] = {}
    offset = 0
    for _, members in groups.groupby(groups):  # deal each age bin round-robin over the folds
        ids = members.index.to_numpy().copy()
        rng.shuffle(ids)
        for j, g in enumerate(ids):
            fold_of[g] = (j + offset) % folds
        offset += len(ids)
    rest = np.array([g for g in fold_of if fold_of[g] != fold])
    rng.shuffle(rest)
    val = set(rest[: round(len(rest) * val_fraction)].tolist())
    part = {
        g: "test" if f == fold else ("val" if g in val else "train") for g, f in fold_of.items()
    }
    return np.array([part[g] for g in gid]), np.array([fold_of[g] for g in gid])


def _assign_loso(
    df: pd.DataFrame, gid: np.ndarray, rng: np.random.Generator, fold: int, val_fraction: float
) -> np.ndarray:
    subjects = _subject_keys(df)
    if subjects is None or subjects.isna().any():
        raise SplitError("split.method=loso needs a subject for every row (e.g. FG-NET)")
    names = sorted(subjects.unique())
    if fold >= len(names):
        raise SplitError(f"split.fold={fold} but only {len(names)} subjects")
    held_out = names[fold]
    is_test = subjects.to_numpy() == held_out
    test_groups = set(gid[is_test].tolist())
    if any(g in test_groups for g in gid[~is_test]):
        raise SplitError(f"subject {held_out} shares an identical image with another subject")
    rest = np.unique(gid[~is_test])
    rng.shuffle(rest)
    val = set(rest[: round(len(rest) * val_fraction)].tolist())
    return np.array(["test" if g in test_groups else ("val" if g in val else "train") for g in gid])


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
    holdout: str | None = None,
    test_parts: dict[str, str] | None = None,
    test_lists: dict[str, tuple[str, Collection[str]]] | None = None,
) -> pd.DataFrame:
    """Assign every row of ``manifest`` to train, val or test without leakage.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Aligned faces with an ``age`` column and optional ``subject``, ``source``, ``sha1``.
    method : {"stratified", "cross_dataset", "kfold", "loso"}
        See the module docstring.
    seed : int
        The same seed and manifest give the same split.
    val_fraction, test_fraction : float
        Fractions of groups per age bin (``stratified``); ``val_fraction`` of the non-test groups
        otherwise.
    test_size : int
        If > 0 (``stratified``), about this many test rows per source instead of
        ``test_fraction``.
    folds, fold : int
        ``kfold``: number of folds and the one held out. ``loso``: ``fold`` is the index of the
        held-out subject in sorted order (iterate ``fold`` over every subject for the protocol).
    age_bin : int
        Width in years of the stratification bins.
    holdout : str, optional
        ``cross_dataset``: the source whose every row is the test part.
    test_lists : dict, optional
        ``stratified``: source name -> (its folder, the files of its test part, relative to the
        folder): a fixed test part that survives a change of detector or of the other sources
        (the whole leakage group of a listed face joins it); such a source gets no other test
        rows. Listed files the manifest lacks (no face found) are simply absent.
    test_parts : dict, optional
        ``stratified``: source name -> the ``source_part`` value whose rows are that source's
        test part (``{"appa_real": "valid"}``); such a source gets no other test rows.

    Returns
    -------
    pandas.DataFrame
        ``manifest`` (index reset) with ``split`` and ``group`` columns (and ``fold`` for kfold).

    Raises
    ------
    SplitError
        When the data cannot be split as asked (no subjects for loso, too few groups, an empty
        part, a row without an age) or the result would leak.
    """
    if manifest.empty:
        raise SplitError("the manifest has no rows to split")
    if manifest["age"].isna().any():
        raise SplitError(
            f"{int(manifest['age'].isna().sum())} row(s) have no age: take the faces of unlabelled "
            "sources out first (separate_unlabelled)"
        )
    df = manifest.reset_index(drop=True).copy()
    rng = np.random.default_rng(seed)
    gid = _groups(df)
    bins = _age_bins(df["age"], age_bin)
    if method in ("stratified", "cross_dataset"):
        if method == "cross_dataset" and holdout not in set(_sources(df)):
            raise SplitError(f"split.holdout={holdout!r} is not a source of the manifest")
        opts = _SourceSplit(
            seed, val_fraction, test_fraction, test_size, dict(test_parts or {}),
            holdout if method == "cross_dataset" else None, dict(test_lists or {}),
        )  # fmt: skip
        if test_fraction + val_fraction >= 1:
            raise SplitError("val and test parts leave nothing to train on")
        df["split"] = _assign_per_source(df, gid, bins, opts)
    elif method == "kfold":
        df["split"], df["fold"] = _assign_kfold(gid, bins, rng, folds, fold, val_fraction)
    elif method == "loso":
        df["split"] = _assign_loso(df, gid, rng, fold, val_fraction)
    else:
        raise SplitError(f"unknown split method {method!r}")
    df["group"] = gid
    check_no_leakage(df)
    for p in PARTS:
        if not (df["split"] == p).any():
            raise SplitError(
                f"the {p} part is empty: {len(df)} rows in {len(set(gid))} leakage-free groups "
                "are too few for these fractions"
            )
    return df


def check_no_leakage(df: pd.DataFrame) -> None:
    """Raise :class:`SplitError` if a subject or an identical image appears in two parts.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with a ``split`` column and optional ``subject`` (with ``source``) and ``sha1``.

    Raises
    ------
    SplitError
        Naming how many subjects or images straddle parts, and one example.
    """
    for name, col in (("subject", _subject_keys(df)), ("sha1", df.get("sha1"))):
        if col is None:
            continue
        values = pd.Series(_known(col.tolist()), index=df.index, dtype=object)
        known = values.notna() & (values.astype(str) != "")
        sides = df.loc[known, "split"].groupby(values[known]).nunique()
        leaked = sides[sides > 1]
        if len(leaked):
            raise SplitError(f"{len(leaked)} {name} value(s) on two sides, e.g. {leaked.index[0]}")
