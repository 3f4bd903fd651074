"""Splits: seeded, stratified, k-fold, leave-one-subject-out, and never leaking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agedistill.data.splits import SplitError, apply_age_range, check_no_leakage, make_split


def manifest(n: int = 600, seed: int = 0, subjects: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "crop": [f"{i:06d}.png" for i in range(n)],
            "source": "src",
            "age": rng.integers(0, 90, n),
            "sha1": [f"h{i}" for i in range(n)],
        }
    )
    df["subject"] = [f"s{i % subjects}" for i in range(n)] if subjects else None
    return df


def test_same_seed_same_split_other_seed_other_split() -> None:
    df = manifest()
    a, b = make_split(df, seed=3), make_split(df, seed=3)
    assert a["split"].tolist() == b["split"].tolist()
    assert make_split(df, seed=4)["split"].tolist() != a["split"].tolist()


def test_stratified_fractions_hold_in_every_age_bin() -> None:
    df = manifest(3000)
    out = make_split(df, val_fraction=0.1, test_fraction=0.2, age_bin=10)
    share = out["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.2, abs=0.02)
    assert share["val"] == pytest.approx(0.1, abs=0.02)
    by_bin = out.assign(bin=out["age"] // 10).groupby("bin")["split"]
    test_share = by_bin.apply(lambda s: (s == "test").mean())
    assert test_share.between(0.12, 0.28).all(), test_share


def test_test_size_asks_for_a_count() -> None:
    out = make_split(manifest(1000), test_size=150)
    assert abs((out["split"] == "test").sum() - 150) <= 20


def test_subject_and_identical_images_never_straddle_parts() -> None:
    df = manifest(400, subjects=40)
    # image 0 (subject s0) is byte-identical to image 1 (subject s1): s0 and s1 must go together
    df.loc[1, "sha1"] = df.loc[0, "sha1"]
    out = make_split(df, seed=1)
    assert out.groupby("subject")["split"].nunique().max() == 1
    assert out.loc[out["subject"].isin(["s0", "s1"]), "split"].nunique() == 1
    assert out.loc[0, "group"] == out.loc[1, "group"]


def test_duplicates_without_subjects_are_grouped_by_content() -> None:
    df = manifest(300)
    df.loc[10:19, "sha1"] = "same"
    for seed in range(5):
        out = make_split(df, seed=seed)
        assert out.loc[10:19, "split"].nunique() == 1


def test_subject_ids_are_per_source() -> None:
    df = manifest(200)
    df["subject"] = [f"s{(i // 2) % 20}" for i in range(200)]
    df.loc[df.index % 2 == 1, "source"] = "other"  # "s1" of src and "s1" of other differ
    out = make_split(df, seed=0)
    pairs = out.groupby(["source", "subject"])["split"].nunique()
    assert pairs.max() == 1
    assert out.groupby("subject")["group"].nunique().max() == 2


def test_check_no_leakage_raises_on_a_leak() -> None:
    df = manifest(10, subjects=5).assign(split=["train"] * 5 + ["test"] * 5)
    with pytest.raises(SplitError, match="subject value"):
        check_no_leakage(df)
    df = manifest(4).assign(split=["train", "train", "val", "test"])
    df.loc[3, "sha1"] = df.loc[0, "sha1"]
    with pytest.raises(SplitError, match="sha1 value"):
        check_no_leakage(df)
    check_no_leakage(df.assign(split="train"))  # one side: no leak


def test_kfold_test_parts_partition_the_data() -> None:
    df = manifest(500, subjects=100)
    tests = [make_split(df, method="kfold", folds=5, fold=k, seed=2) for k in range(5)]
    assert all((t["fold"] == tests[0]["fold"]).all() for t in tests)  # one fold layout
    held = np.stack([(t["split"] == "test").to_numpy() for t in tests])
    assert (held.sum(axis=0) == 1).all()  # every row is tested exactly once
    sizes = held.sum(axis=1)
    assert sizes.max() - sizes.min() <= 0.1 * len(df), sizes
    assert tests[0].groupby("subject")["fold"].nunique().max() == 1


def test_loso_holds_out_exactly_one_subject() -> None:
    df = manifest(120, subjects=12)
    seen = set()
    for k in range(12):
        out = make_split(df, method="loso", fold=k)
        test_subjects = set(out.loc[out["split"] == "test", "subject"])
        assert len(test_subjects) == 1
        seen |= test_subjects
        assert not test_subjects & set(out.loc[out["split"] != "test", "subject"])
    assert seen == {f"s{i}" for i in range(12)}


def test_impossible_splits_fail_clearly() -> None:
    with pytest.raises(SplitError, match="needs a subject"):
        make_split(manifest(50), method="loso")
    with pytest.raises(SplitError, match="only 3 subjects"):
        make_split(manifest(30, subjects=3), method="loso", fold=3)
    with pytest.raises(SplitError, match="part is empty"):
        make_split(manifest(50, subjects=1))  # one person cannot be both train and test
    shared = manifest(40, subjects=4)
    shared.loc[1, "sha1"] = shared.loc[0, "sha1"]  # s0 and s1 share an image
    with pytest.raises(SplitError, match="shares an identical image"):
        make_split(shared, method="loso", fold=0)
    with pytest.raises(SplitError, match="cannot fill 5 folds"):
        make_split(manifest(40, subjects=3), method="kfold")
    with pytest.raises(SplitError, match="no rows"):
        make_split(manifest(0))


def test_ages_out_of_range_are_clipped_or_dropped() -> None:
    df = pd.DataFrame({"age": [-1, 0, 50, 100, 116]})
    clipped, none = apply_age_range(df, 0, 100, "clip")
    assert clipped["age"].tolist() == [0, 0, 50, 100, 100] and none.empty
    kept, dropped = apply_age_range(df, 0, 100, "drop")
    assert kept["age"].tolist() == [0, 50, 100]
    assert dropped["age"].tolist() == [-1, 116]
    assert (dropped["reason"] == "age outside [0, 100]").all()


def test_a_test_part_that_matches_no_row_is_an_error_not_an_empty_test_part() -> None:
    df = manifest(200).assign(source_part="train")
    df.loc[:49, "source_part"] = "valid"
    out = make_split(df, test_parts={"src": "valid"})
    assert (out.loc[:49, "split"] == "test").all() and (out.loc[50:, "split"] != "test").all()
    with pytest.raises(SplitError, match=r"test_part 'validation'.*found \['train', 'valid'\]"):
        make_split(df, test_parts={"src": "validation"})
    with pytest.raises(SplitError, match="no split column"):
        make_split(manifest(200), test_parts={"src": "valid"})
