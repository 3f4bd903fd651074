"""Stage `split`: seeded, leakage-free train/val/test tables of the aligned faces."""

import argparse
from pathlib import Path

import pandas as pd

from agedistill.config import load_params
from agedistill.data.splits import PARTS, SplitError, apply_age_range, make_split
from agedistill.pipeline.outputs import write_json
from agedistill.pipeline.stage import stage_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True, help="folder for train.csv, val.csv, test.csv")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params()
    s, ages = params.split, params.ages
    manifest = pd.read_csv(args.manifest, dtype={"subject": str})
    kept, excluded = apply_age_range(manifest, ages.min_age, ages.max_age, ages.out_of_range)
    try:
        table = make_split(
            kept, method=s.method, seed=s.seed, val_fraction=s.val_fraction,
            test_fraction=s.test_fraction, test_size=s.test_size, folds=s.folds, fold=s.fold,
            age_bin=s.age_bin, holdout=s.holdout,
            test_parts={src.name: src.test_part for src in params.align.sources if src.test_part},
        )  # fmt: skip
    except SplitError as e:  # the data cannot be split as asked: say why, no traceback
        raise SystemExit(f"split: {e}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        table[table["split"] == part].to_csv(out / f"{part}.csv", index=False)
    excluded.to_csv(out / "excluded.csv", index=False)
    counts = {p: int((table["split"] == p).sum()) for p in PARTS} | {"excluded": len(excluded)}
    if "source" in table:
        by_source = table.groupby(["source", "split"]).size().unstack(fill_value=0)
        counts["by_source"] = {
            src: {p: int(row.get(p, 0)) for p in PARTS} for src, row in by_source.iterrows()
        }
    write_json(counts, args.metrics)
    print(f"split: {counts}")


if __name__ == "__main__":
    stage_main("split", main)
