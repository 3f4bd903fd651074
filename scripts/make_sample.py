"""Rebuild the bundled sample.

python scripts/make_sample.py ../shared/data/utkface/images data/sample
"""

import argparse
import shutil
from pathlib import Path

from agedistill.faces.sample import stratified_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source", help="folder of UTKFace chips")
    ap.add_argument("out", help="sample folder (images/ and manifest.csv are written)")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    chosen = stratified_sample(args.source, args.n, args.seed)
    images = Path(args.out) / "images"
    images.mkdir(parents=True, exist_ok=True)
    for p in chosen["path"]:
        shutil.copy2(p, images / Path(p).name)
    chosen.assign(file=[Path(p).name for p in chosen["path"]]).drop(columns=["path", "subject"])[
        ["file", "age", "gender", "race"]
    ].to_csv(Path(args.out) / "manifest.csv", index=False)
    print(f"{len(chosen)} files -> {images}")


if __name__ == "__main__":
    main()
