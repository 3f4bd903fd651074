"""The ``align`` stage on a folder of every kind of bad input a user will have: no crash, and
every file ends up in the manifest or in the rejects table with its reason."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agedistill.faces.align_dataset import SourceSpec, align_dataset, summarize

pytestmark = pytest.mark.integration


def fake_png_header(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
    )


def name(age: int, i: int, ext: str = "jpg") -> str:
    return f"{age}_1_0_2017011000000{i:04d}.{ext}"


def build_bad_folder(folder: Path, chip_path: Path) -> tuple[dict[str, str], Path]:
    """Write one file per kind of input; return {file name: expected outcome} and the huge one."""
    chip = Image.open(chip_path).convert("RGB")
    expect: dict[str, str] = {}

    def put(fname: str, outcome: str, writer) -> None:
        writer(folder / fname)
        expect[fname] = outcome

    put(name(30, 1), "aligned", lambda p: chip.save(p))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; the viewer turns it back upright
    put(name(31, 2), "aligned", lambda p: chip.rotate(90, expand=True).save(p, exif=exif))
    put(name(32, 3), "aligned", lambda p: chip.convert("L").save(p))
    put(name(33, 4, "png"), "aligned", lambda p: chip.convert("RGBA").save(p))
    put(name(34, 5, "png"), "aligned", lambda p: chip.convert("P").save(p))
    put(name(35, 6), "aligned", lambda p: chip.convert("CMYK").save(p))
    deep = (np.asarray(chip.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    put(name(36, 7, "png"), "aligned", lambda p: Image.fromarray(deep).save(p))
    huge = Image.new("RGB", (6000, 4000), (90, 110, 100))
    huge.paste(chip.resize((600, 600)), (4000, 2500))
    put(name(37, 8), "aligned", lambda p: huge.save(p, quality=85))
    put(name(40, 9, "png"), "image too small", lambda p: chip.resize((9, 9)).save(p))
    put(name(41, 10, "png"), "image too large", lambda p: fake_png_header(p, 40_000, 40_000))
    cut = chip_path.read_bytes()
    put(name(42, 11), "unreadable", lambda p: p.write_bytes(cut[: len(cut) // 3]))
    put(name(43, 12), "unreadable", lambda p: p.write_bytes(b""))
    put(name(44, 13), "not an image", lambda p: p.write_text("this is a text file\n"))
    noise = np.random.default_rng(0).integers(90, 160, (200, 200, 3), dtype=np.uint8)
    put(name(45, 14), "no face", lambda p: Image.fromarray(noise).save(p))
    put("holiday.jpg", "label unparsable", lambda p: chip.save(p))
    small = Image.new("RGB", (400, 400), (128, 128, 128))
    small.paste(chip.resize((24, 24)), (200, 200))
    put(name(46, 15), "no face|face too small", lambda p: small.save(p))
    return expect, folder / name(37, 8)


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, sample_images: Path):
    root = tmp_path_factory.mktemp("align")
    bad, fgnet = root / "bad", root / "fgnet"
    bad.mkdir()
    fgnet.mkdir()
    chip = sorted(sample_images.iterdir())[0]
    expect, huge = build_bad_folder(bad, chip)
    shutil.copy(chip, fgnet / "078A11.JPG")
    shutil.copy(chip, fgnet / "078A12.JPG")
    manifest, rejects = align_dataset(
        [SourceSpec(str(bad), "utkface"), SourceSpec(str(fgnet), "fgnet")],
        root / "crops", size=64, min_face_size=40, batch_size=4, workers=2, progress=False,
    )  # fmt: skip
    return manifest, rejects, expect, root, huge


def test_every_file_is_accounted_for_once(aligned) -> None:
    manifest, rejects, expect, _, _ = aligned
    listed = [Path(p).name for p in [*manifest["path"], *rejects["path"]]]
    assert sorted(listed) == sorted([*expect, "078A11.JPG", "078A12.JPG"])
    counts = summarize(manifest, rejects)
    assert counts["processed"] == len(expect) + 2
    assert counts["aligned"] + counts["rejected"] == counts["processed"]


def test_each_bad_input_gets_its_reason(aligned) -> None:
    manifest, rejects, expect, _, _ = aligned
    reasons = dict(zip(rejects["path"].map(lambda p: Path(p).name), rejects["reason"], strict=True))
    ok = set(manifest["path"].map(lambda p: Path(p).name))
    for fname, outcome in expect.items():
        if outcome == "aligned":
            assert fname in ok, (fname, reasons.get(fname))
        else:
            assert fname in reasons, fname
            assert any(reasons[fname].startswith(o) for o in outcome.split("|")), reasons[fname]


def test_crops_and_manifest_rows(aligned) -> None:
    manifest, _, _, root, huge = aligned
    for row in manifest.itertuples():
        crop = Image.open(root / "crops" / row.crop)
        assert crop.size == (64, 64) and crop.mode == "RGB"
        assert row.det_prob >= 0.95 and len(row.landmarks.split()) == 10
    fg = manifest[manifest["source"].str.endswith("fgnet")]
    assert fg["subject"].tolist() == ["078", "078"] and fg["age"].tolist() == [11, 12]
    # the huge photo was detected downscaled; its box is reported in original pixels
    row = manifest[manifest["path"] == str(huge)].iloc[0]
    assert 3900 < row.box_x < 4200 and 2400 < row.box_y < 2700 and 300 < row.box_w < 700


def test_upright_crops_match_across_modes(aligned) -> None:
    manifest, _, _, root, _ = aligned
    firsts = manifest[manifest["path"].map(lambda p: Path(p).name).isin([name(30, 1), name(31, 2)])]
    a, b = (np.asarray(Image.open(root / "crops" / c), dtype=float) for c in firsts["crop"])
    assert np.abs(a - b).mean() < 12  # the EXIF-rotated copy aligns to the same face
