"""Stage `inventory`: one source folder's files (path, bytes, SHA-1), which `align` depends on."""

import argparse
from pathlib import Path

from agedistill.faces.inventory import inventory
from agedistill.pipeline.stage import stage_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True, help="the source folder (align.sources[i].path)")
    ap.add_argument("--out", required=True, help="CSV to write")
    args = ap.parse_args()
    table = inventory(args.root)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"inventory: {len(table)} files, {table['bytes'].sum() / 1e6:.1f} MB in {args.root}")


if __name__ == "__main__":
    stage_main("inventory", main)
