"""Stage `split`: seeded, leakage-free train/val/test tables of the aligned faces."""

import argparse
from pathlib import Path

import pandas as pd

from agedistill.config import load_params
from agedistill.data.splits import (
    PARTS,
    UNLABELLED,
    SplitError,
    apply_age_range,
    make_split,
    read_test_list,
    separate_unlabelled,
    split_counts,
    unlabelled_part,
)
from agedistill.pipeline.outputs import write_json
from agedistill.pipeline.stage import stage_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", required=True)
    ap.add_argument(
        "--out", required=True, help="folder for train.csv, val.csv, test.csv, unlabelled.csv"
    )
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params()
    s, ages = params.split, params.ages
    manifest = pd.read_csv(args.manifest, dtype={"subject": str})
    unlabelled_sources = {src.name for src in params.align.sources if src.reader == UNLABELLED}
    try:
        labelled, unlabelled, duplicates = separate_unlabelled(manifest, unlabelled_sources)
        kept, excluded = apply_age_range(labelled, ages.min_age, ages.max_age, ages.out_of_range)
        table = make_split(
            kept, method=s.method, seed=s.seed, val_fraction=s.val_fraction,
            test_fraction=s.test_fraction, test_size=s.test_size, folds=s.folds, fold=s.fold,
            age_bin=s.age_bin, holdout=s.holdout,
            test_parts={src.name: src.test_part for src in params.align.sources if src.test_part},
            test_lists={src.name: (src.path, read_test_list(src.test_list))
                        for src in params.align.sources if src.test_list},
        )  # fmt: skip
    except SplitError as e:  # the data cannot be split as asked: say why, no traceback
        raise SystemExit(f"split: {e}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        table[table["split"] == part].to_csv(out / f"{part}.csv", index=False)
    unlabelled_part(unlabelled, table).to_csv(out / f"{UNLABELLED}.csv", index=False)
    excluded.to_csv(out / "excluded.csv", index=False)
    counts = split_counts(table, excluded, unlabelled, duplicates)
    write_json(counts, args.metrics)
    print(f"split: {counts}")


if __name__ == "__main__":
    stage_main("split", main)
