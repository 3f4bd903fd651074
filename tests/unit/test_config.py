import pytest
import yaml

from agedistill.config import ParamsError, load_params, parse_params


@pytest.fixture
def raw(repo):
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_repository_params_are_valid(repo):
    p = load_params(repo / "params.yaml")
    assert p.ages.num_classes == p.ages.max_age - p.ages.min_age + 1
    assert p.distill.temperature > 0


def test_wrong_type_names_the_key(raw):
    raw["distill"]["temperature"] = "hot"
    with pytest.raises(ParamsError, match=r"distill\.temperature"):
        parse_params(raw)


def test_out_of_range_value_names_the_key(raw):
    raw["rank_teacher"]["k"] = 9
    with pytest.raises(ParamsError, match=r"rank_teacher\.k"):
        parse_params(raw)


def test_unknown_ranking_head_is_rejected_by_name(raw):
    raw["rank_teacher"]["head"] = "pairwise"
    with pytest.raises(ParamsError, match=r"rank_teacher\.head.*plackett_luce"):
        parse_params(raw)


def test_unknown_key_is_an_error(raw):
    raw["distill"]["temprature"] = 4
    with pytest.raises(ParamsError, match=r"distill\.temprature"):
        parse_params(raw)


def test_missing_section_is_an_error(raw):
    del raw["evaluate"]
    with pytest.raises(ParamsError, match="evaluate"):
        parse_params(raw)


def test_yaml_exponent_strings_and_ints_become_floats(raw):
    raw["class_teacher"]["lr"] = "1e-3"
    raw["distill"]["temperature"] = 4
    p = parse_params(raw)
    assert p.class_teacher.lr == pytest.approx(1e-3)
    assert p.distill.temperature == 4.0


def test_age_range_must_be_increasing(raw):
    raw["ages"]["max_age"] = 0
    with pytest.raises(ParamsError, match="ages"):
        parse_params(raw)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "params.yaml")


def test_detection_border_and_age_loss_are_checked(raw):
    assert parse_params(raw).align.detect_pad == 0.25
    bad = {**raw, "align": {**raw["align"], "detect_pad": -0.1}}
    with pytest.raises(ParamsError, match=r"align\.detect_pad"):
        parse_params(bad)
    bad = {**raw, "age_loss": {"label_sigma": -1.0, "mae_weight": 0.0}}
    with pytest.raises(ParamsError, match=r"age_loss\.label_sigma"):
        parse_params(bad)
    old = {k: v for k, v in raw.items() if k != "age_loss"}  # params files from before the section
    assert parse_params(old).age_loss.label_sigma == 0.0


def test_ranking_teacher_may_read_smaller_faces_when_hinted_maps_match(raw):
    # a 128-px five-stage student hinted at its 8x8 stage 3 by a 64-px teacher's 8x8 stage 2
    raw["student"] |= {"widths": [16, 32, 64, 128, 192], "input_size": 128}
    raw["rank_teacher"]["model"]["input_size"] = 64
    raw["rank_teacher"]["hint_stage"] = 2
    raw["distill"]["hint_stage"] = 3
    assert parse_params(raw).student.input_size == 128
    raw["distill"]["hint_stage"] = 2  # 16x16 against 8x8
    with pytest.raises(ParamsError, match=r"stage 2 \(16x16 at 128 px\).*stage 2 \(8x8 at 64 px\)"):
        parse_params(raw)
    raw["distill"]["hint_weight"] = 0.0  # no hint, nothing to match
    assert parse_params(raw).distill.hint_stage == 2
    raw["distill"] |= {"hint_weight": 1.0, "hint_stage": 7}
    with pytest.raises(ParamsError, match="the student has 5 stages"):
        parse_params(raw)
