"""Fast tests of ``agedistill.serving.predict`` and the ``predict`` command without MTCNN.

A stub detector returns fixed landmarks, so alignment and the shipped student run for real while
the tests stay fast; model-file errors are checked through the command line.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agedistill import __version__
from agedistill.cli import main
from agedistill.faces.detection import Detection, Face
from agedistill.faces.geometry import template
from agedistill.models.files import FORMAT, ModelFileError
from agedistill.serving.age_model import AgeModel
from agedistill.serving.loading import default_model_path, load_age_model
from agedistill.serving.predict import predict_files, predict_image, write_csv, write_json
from agedistill.serving.results import ImageResult
from agedistill.serving.rows import COLUMNS, result_rows

HEADER = "path,face,x,y,w,h,det_prob,age,age_std,error"


class StubDetector:
    """One face whose landmarks are the alignment template placed at (100, 50), size 80."""

    detect_max_side = 640

    def __init__(self, n_faces: int = 1) -> None:
        self.n_faces = n_faces
        self.calls: list[tuple[int, int]] = []

    def detect(self, images: list[Image.Image]) -> list[Detection]:
        self.calls.extend(im.size for im in images)
        lm = template(80, 0.0) + np.array([100.0, 50.0])
        faces = [
            Face(np.array([100.0, 50.0, 180.0, 130.0]), 0.99 - 0.01 * i, lm)
            for i in range(self.n_faces)
        ]
        return [Detection(list(faces)) for _ in images]


@pytest.fixture(scope="module")
def model() -> AgeModel:
    return load_age_model()


@pytest.fixture()
def noise_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))


def test_default_model_is_the_shipped_student(model: AgeModel) -> None:
    path = default_model_path()
    assert path.is_file() and path.parent.name == "assets"
    assert path.stat().st_size <= 4_000_000
    assert (path.parent / "MODEL_CARD.md").is_file()
    assert model.config["arch"] == "convnet" and model.path == path


def test_flip_reads_the_mirror_image_too(model: AgeModel, noise_image: Image.Image) -> None:
    one_way = AgeModel(model.net, model.config, model.path, flip=False)
    assert model.flip and not load_age_model(flip=False).flip  # on unless asked off
    face = np.asarray(noise_image.resize((model.input_size, model.input_size)))
    crops = np.stack([face, face[:, ::-1].copy()])  # (N, S, S, 3) uint8
    plain, _ = one_way.ages(crops)
    both, spread = model.ages(crops)
    # a face and its mirror image read the same mixture of two distributions: one age, whose
    # median lies between the two plain ones
    assert plain[0] != pytest.approx(plain[1], abs=1e-3)
    np.testing.assert_allclose(both[0], both[1], atol=1e-4)
    assert plain.min() - 1e-4 <= both[0] <= plain.max() + 1e-4
    np.testing.assert_allclose(spread[0], spread[1], atol=1e-4)


def test_csv_header_is_exact_and_error_rows_have_empty_face_fields() -> None:
    rows = result_rows(ImageResult("dogs.jpg", [], "no face")) + result_rows(
        ImageResult("bad.txt", [], "not an image", read=False)
    )
    buf = io.StringIO()
    write_csv(rows, buf)
    lines = buf.getvalue().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "dogs.jpg,,,,,,,,,no face"
    assert lines[2] == "bad.txt,,,,,,,,,not an image"


def test_face_rows_are_numbered_by_probability(model: AgeModel, noise_image: Image.Image) -> None:
    faces = predict_image(noise_image, model, StubDetector(n_faces=3))
    assert [f.face for f in faces] == [0, 1, 2]
    assert [f.det_prob for f in faces] == sorted((f.det_prob for f in faces), reverse=True)
    rows = result_rows(ImageResult("p.jpg", faces))
    buf = io.StringIO()
    write_csv(rows, buf)
    table = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["face"] for r in table] == ["0", "1", "2"]
    assert all(r["error"] == "" for r in table)
    assert float(table[0]["x"]) == pytest.approx(100.0) and float(table[0]["w"]) == 80.0
    lm = template(80, 0.0) + np.array([100.0, 50.0])  # the stub's face, read by hand
    age, std = model.ages(np.asarray(model.align(noise_image, lm))[None])
    assert float(table[0]["age"]) == pytest.approx(age[0], abs=0.006)  # written to 2 places
    assert float(table[0]["age_std"]) == pytest.approx(std[0], abs=0.006)


def test_json_has_the_csv_fields(model: AgeModel, noise_image: Image.Image) -> None:
    faces = predict_image(noise_image, model, StubDetector())
    rows = result_rows(ImageResult("p.jpg", faces)) + result_rows(ImageResult("q.jpg", []))
    buf = io.StringIO()
    write_json(rows, buf)
    data = json.loads(buf.getvalue())
    assert [list(r) for r in data] == [COLUMNS, COLUMNS]
    assert data[0]["face"] == 0 and data[0]["error"] is None
    assert data[1]["face"] is None and data[1]["error"] == "no face"


def test_predict_image_accepts_arrays_of_any_layout(model: AgeModel) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((200, 300, 1), 255, np.uint8)], axis=2)
    ages = [predict_image(a, model, StubDetector())[0].age for a in (rgb, rgba)]
    assert ages[0] == pytest.approx(ages[1], abs=1e-4)  # opaque alpha changes nothing
    gray = predict_image(rgb[..., 0], model, StubDetector())  # read as its RGB copy
    as_rgb = predict_image(np.repeat(rgb[..., :1], 3, axis=2), model, StubDetector())
    assert len(gray) == 1 and gray[0].age == pytest.approx(as_rgb[0].age, abs=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        predict_image(rgb.astype(np.float32), model, StubDetector())
    with pytest.raises(ValueError, match=r"\(H, W"):
        predict_image(np.zeros((4, 4, 2), np.uint8), model, StubDetector())


def test_large_images_are_detected_on_a_reduced_copy(model: AgeModel) -> None:
    det = StubDetector()
    big = Image.new("RGB", (2560, 1280), (128, 128, 128))
    faces = predict_image(big, model, det)
    assert det.calls == [(1280, 640)]  # at most 2 x detect_max_side, as in the align stage
    # boxes come back in original pixels: the stub's (100, 50, 80, 80) at scale 0.5
    assert (faces[0].x, faces[0].y, faces[0].w) == pytest.approx((200.0, 100.0, 160.0))


def test_bad_files_give_error_rows_not_crashes(model: AgeModel, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(_jpeg_bytes()[:200])
    Image.new("RGB", (300, 200)).save(tmp_path / "ok.png")
    results = {
        Path(r.path).name: r
        for r in predict_files([tmp_path, tmp_path / "gone.jpg"], model, StubDetector())
    }
    assert results["notes.txt"].error == "not an image" and not results["notes.txt"].read
    assert results["empty.jpg"].error == "unreadable: empty file"
    assert results["truncated.jpg"].error.startswith("unreadable")
    assert results["gone.jpg"].error == "unreadable: no such file"
    assert results["ok.png"].read and len(results["ok.png"].faces) == 1


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def test_exit_code_is_1_only_when_nothing_could_be_read(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "b.jpg").write_bytes(b"\x00" * 10)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(tmp_path), "--out", str(out), "--no-progress"]) == 1
    lines = out.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 3
    assert "none of 2 input file(s) could be read" in capsys.readouterr().err


def test_the_command_formats_warnings_on_one_line_only_while_it_runs(
    tmp_path: Path, monkeypatch
) -> None:
    import warnings

    import agedistill.cli as cli

    seen = []

    def run(args):  # stands in for the command: what a warning inside it looks like
        seen.append(warnings.formatwarning(UserWarning("it is so"), UserWarning, "f.py", 3))
        return 0

    before = warnings.formatwarning
    monkeypatch.setattr(cli, "_run", run)
    assert main(["predict", str(tmp_path)]) == 0
    assert seen == ["agedistill predict: warning: it is so\n"]
    assert warnings.formatwarning is before  # a caller's own warnings look as they did


def test_a_faceless_image_counts_as_read(tmp_path: Path) -> None:
    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    out = tmp_path / "preds.json"
    code = main(["predict", str(tmp_path / "grey.png"), "--out", str(out)])
    assert code == 0
    assert json.loads(out.read_text()) == [
        {"path": str(tmp_path / "grey.png"), **dict.fromkeys(COLUMNS[1:9]), "error": "no face"}
    ]


def test_threads_option_sets_torch_threads_and_refuses_zero(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that 1 afterwards is the option's doing
    try:
        code = main(["predict", str(tmp_path / "grey.png"), "--threads", "1"])
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(tmp_path / "grey.png"), "--threads", "0"])
    assert exc.value.code == 2 and "must be at least 1, not 0" in capsys.readouterr().err


# --- model files: one line on stderr naming the file, exit code 2, no pickled code executed ---


def _model_error(model_file: Path, tmp_path: Path, capsys) -> str:
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    code = main(["predict", str(tmp_path / "x.png"), "--model", str(model_file)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(model_file) in err
    return err


def test_missing_model_file(tmp_path: Path, capsys) -> None:
    assert "no such model file" in _model_error(tmp_path / "nope.pt", tmp_path, capsys)


def test_corrupt_model_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "random.pt"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "not a PyTorch model file" in _model_error(bad, tmp_path, capsys)


class _Payload:
    """Unpickling this would create ``marker``: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_in_a_model_file_is_not_executed(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "config": {}, "state_dict": _Payload(marker)}, evil)
    assert not marker.exists()
    err = _model_error(evil, tmp_path, capsys)
    assert "holds pickled Python objects" in err and "\x1b" not in err
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(_Payload(marker)))
    _model_error(plain, tmp_path, capsys)
    assert not marker.exists()


def test_rank_teacher_is_refused_as_the_wrong_architecture(tmp_path: Path, capsys) -> None:
    from agedistill.models.files import save_model
    from agedistill.models.nets import RankTeacher

    config = {
        "arch": "rank_teacher", "widths": [8, 8, 8, 8], "stem_stride": 2, "depthwise": False,
        "dropout": 0.0, "input_size": 64, "k": 3, "feature_dim": 16,
    }  # fmt: skip
    path = tmp_path / "rank_teacher.pt"
    save_model(path, RankTeacher([8, 8, 8, 8], 3, 16, 2), config)
    err = _model_error(path, tmp_path, capsys)
    assert "'rank_teacher' model has no age head" in err


def _blob_with(**changes) -> dict:
    blob = torch.load(default_model_path(), weights_only=True)
    blob["config"] = {**blob["config"], **changes.get("config", {})}
    if "format" in changes:
        blob["format"] = changes["format"]
    return blob


def test_model_from_another_major_version_is_refused(tmp_path: Path, capsys) -> None:
    major = int(__version__.split(".")[0])
    path = tmp_path / "future.pt"
    torch.save(_blob_with(config={"agedistill_version": f"{major + 1}.0.0"}), path)
    assert "major versions differ" in _model_error(path, tmp_path, capsys)


def test_model_file_of_another_format_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "v2.pt"
    torch.save(_blob_with(format="agedistill-model/2"), path)
    assert "this release reads 'agedistill-model/1'" in _model_error(path, tmp_path, capsys)


def test_malformed_config_is_a_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    blob = _blob_with()
    del blob["config"]["widths"]
    torch.save(blob, path)
    with pytest.raises(ModelFileError, match="malformed model config"):
        load_age_model(path)


def test_export_reports_model_errors_the_same_way(tmp_path: Path, capsys) -> None:
    code = main(["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--model", str(tmp_path / "none.pt")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no such model file" in err


def test_annotated_copies_mirror_the_input_layout(model: AgeModel, tmp_path: Path) -> None:
    src, ann = tmp_path / "in", tmp_path / "ann"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        Image.new("RGB", (320, 240), (40, 40, 40)).save(src / sub / "x.png")
    Image.new("RGB", (320, 240)).save(src / "noext", format="PNG")
    (src / "notes.txt").write_text("no image")
    list(predict_files([src, src / "a" / "x.png"], model, StubDetector(), annotate_dir=ann))
    written = sorted(str(p.relative_to(ann)) for p in ann.rglob("*") if p.is_file())
    assert written == ["a/x.png", "b/x.png", "noext.png", "x.png"]
    drawn = np.asarray(Image.open(ann / "a" / "x.png"))
    assert (drawn[50, 100:180] == (255, 32, 32)).all()  # the stub's box, top edge, in red


def test_predict_searches_photos_with_the_border_the_model_was_aligned_with(
    tmp_path: Path, monkeypatch
) -> None:
    import agedistill.serving.predict as predict_mod

    used: list[float] = []

    def recording(name, settings, *, exact_batches=False) -> StubDetector:
        used.append(settings.pad)
        return StubDetector()

    monkeypatch.setattr(predict_mod, "make_detector", recording)
    Image.new("RGB", (300, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    for pad in (0.0, 0.4):
        path = tmp_path / f"pad{pad}.pt"
        torch.save(_blob_with(config={"align_detect_pad": pad}), path)
        assert load_age_model(path).detect_pad == pad
        out = tmp_path / "preds.csv"
        args = ["predict", str(tmp_path / "grey.png"), "--model", str(path), "--out", str(out)]
        assert main(args) == 0
    assert used == [0.0, 0.4]
    # a model file written before the key existed gets the pipeline's default
    old = _blob_with()
    old["config"].pop("align_detect_pad", None)
    torch.save(old, tmp_path / "old.pt")
    from agedistill.faces.detection import DETECT_PAD

    assert load_age_model(tmp_path / "old.pt").detect_pad == DETECT_PAD


def test_shard_workers_and_resume_options_are_checked(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    for bad, says in ((["--shard", "0/3"], "K/N"), (["--shard", "two"], "K/N"),
                      (["--workers", "-1"], "--workers: must be at least 0, not -1")):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(tmp_path / "x.png"), *bad])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
    code = main(["predict", str(tmp_path / "x.png"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--resume needs --out" in err
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("file,age\nx.png,3\n")
    code = main(["predict", str(tmp_path / "x.png"), "--out", str(foreign), "--resume"])
    assert code == 2 and "cannot resume" in capsys.readouterr().err
    assert foreign.read_text() == "file,age\nx.png,3\n"


@pytest.mark.parametrize("name", ["preds.parquet", "preds"])
def test_an_output_format_predict_does_not_write_is_a_one_line_error_before_any_work(
    tmp_path: Path, capsys, name: str
) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    out = tmp_path / name
    # a missing model file too: the --out error comes first, so no model was loaded
    args = ["predict", str(tmp_path / "x.png"), "--out", str(out), "--model", "nope.pt"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("agedistill predict: error: cannot write") and err.count("\n") == 1
    assert ("'.parquet'" if name.endswith(".parquet") else "no extension") in err
    assert ".csv, .json, .jsonl" in err and "Traceback" not in err
    assert not out.exists()
