"""Stage `align`: detect, select and align the main face of every source image."""

import argparse
from pathlib import Path

from agedistill.config import load_params
from agedistill.faces.align_dataset import SourceSpec, align_with_params, summarize
from agedistill.pipeline.outputs import write_json
from agedistill.pipeline.stage import stage_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", required=True, help="folder for aligned crops")
    ap.add_argument("--manifest", required=True, help="CSV of aligned faces")
    ap.add_argument("--rejects", required=True, help="CSV of rejected files with reasons")
    ap.add_argument("--metrics", required=True, help="JSON counts")
    args = ap.parse_args()
    p = load_params().align
    # relative source paths resolve against the working copy DVC runs in (and hashed as a dep);
    # `agedistill exp` makes paths outside the repository absolute
    sources = [SourceSpec(s.path, s.reader, s.csv, s.name) for s in p.sources]
    manifest, rejects = align_with_params(sources, args.crops, p, base=Path.cwd())
    manifest.to_csv(args.manifest, index=False)
    rejects.to_csv(args.rejects, index=False)
    counts = summarize(manifest, rejects)
    write_json(counts, args.metrics)
    print(f"align: {counts}")


if __name__ == "__main__":
    stage_main("align", main)
