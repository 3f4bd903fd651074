"""Decoding: every image mode a user may have becomes upright RGB; bad files get a reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agedistill.faces.decode import ImageReadError, load_image, read_image, to_rgb


def gradient(w: int = 60, h: int = 40) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (h, 1))] * 3, axis=-1), "RGB")


def fake_png_header(path: Path, width: int, height: int) -> Path:
    """A valid-looking PNG that claims ``width`` x ``height`` pixels but holds almost none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr", "I", "F"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    out = to_rgb(gradient().convert(mode))
    assert out.mode == "RGB" and out.size == (60, 40)
    assert np.asarray(out)[:, -1].mean() > 200  # the bright side stays bright


def test_transparent_pixels_become_white() -> None:
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(im))[0, 0].tolist() == [255, 255, 255]


def test_16_bit_png_uses_its_full_range(tmp_path: Path) -> None:
    a = np.linspace(0, 65535, 60 * 40).reshape(40, 60).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = np.asarray(read_image(tmp_path / "deep.png"))
    assert out.min() == 0 and out.max() == 255


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    gradient(60, 40).save(tmp_path / "turned.jpg", exif=exif)
    im = read_image(tmp_path / "turned.jpg")
    assert im.size == (40, 60)
    assert np.asarray(im)[-1].mean() > 200 > np.asarray(im)[0].mean()


def test_large_images_are_downscaled_with_their_scale(tmp_path: Path) -> None:
    gradient(3000, 1000).save(tmp_path / "wide.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    gradient(3000, 1000).save(tmp_path / "tall.jpg", exif=exif)
    im, scale = load_image(tmp_path / "wide.jpg", max_side=500)
    assert im.size == (500, 167) and scale == pytest.approx(500 / 3000)
    im, scale = load_image(tmp_path / "tall.jpg", max_side=500)
    assert im.size == (167, 500) and scale == pytest.approx(500 / 3000)
    assert load_image(tmp_path / "wide.jpg")[0].size == (3000, 1000)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "unreadable: empty file"),
        (b"name,age\nbob,31\n", "not an image"),
    ],
)
def test_non_images_are_refused_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(ImageReadError, match=f"^{reason}$"):
        read_image(tmp_path / "x.jpg")


def test_truncated_files_are_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    gradient(400, 300).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=r"^unreadable: "):
        read_image(tmp_path / "cut.jpg")


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    bomb = fake_png_header(tmp_path / "bomb.png", 30_000, 30_000)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageReadError, match=r"^image too large"):
        read_image(bomb)
    with pytest.raises(ImageReadError, match=r"^image too large: 60x40"):
        gradient().save(tmp_path / "small.png")
        read_image(tmp_path / "small.png", max_pixels=1000)
