"""Named profiles become ``dvc exp run -S`` overrides that work outside the workspace too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from agedistill.config import ParamsError
from agedistill.pipeline.profiles import (
    ProfileError,
    hydra_value,
    load_profile,
    merge,
    profile_overrides,
)


@pytest.fixture
def pipeline_dir(repo, tmp_path, monkeypatch):
    """A folder with the repository's params.yaml and a dvc.yaml, made the working directory."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_values_are_written_in_dvc_override_grammar():
    assert hydra_value(True) == "true" and hydra_value(None) == "null" and hydra_value(4) == "4"
    assert hydra_value("it's") == "'it\\'s'"
    assert hydra_value([{"path": "/d/x y", "reader": "csv"}]) == "[{path:'/d/x y',reader:'csv'}]"


def test_full_profile_makes_source_paths_absolute(repo, tmp_path, pipeline_dir):
    args = profile_overrides(repo / "profiles" / "full.yaml")
    sets = dict(a.split("=", 1) for a in args[1::2])
    assert args[0::2] == ["-S"] * len(sets)
    shared = (tmp_path / "../shared/data").resolve()
    unlabelled = (tmp_path / "../unlabelled").resolve()
    assert sets["align.sources"] == (
        f"[{{name:'utkface',path:'{shared}/utkface/images',reader:'utkface',"
        "test_list:'data/test_parts/utkface.csv'},"
        f"{{name:'aaf',path:'{shared}/aaf',reader:'csv',csv:'labels.csv',"
        "test_list:'data/test_parts/aaf.csv'},"
        f"{{name:'appa_real',path:'{shared}/appa_real',reader:'csv',csv:'labels.csv',"
        "test_part:'valid'},"
        f"{{name:'lfw',path:'{unlabelled}/lfw',reader:'unlabelled'}},"
        f"{{name:'celeba',path:'{unlabelled}/celebA',reader:'unlabelled'}}]"
    )
    assert sets["split.test_size"] == "2000" and sets["distill.train.epochs"] == "20"
    assert sets["distill.unlabelled_ratio"] == "0.5"


def test_a_bad_profile_fails_before_dvc_starts(repo, tmp_path, monkeypatch):
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"distill": {"temperature": -1}}))
    with pytest.raises(ParamsError, match=r"distill\.temperature"):
        profile_overrides(tmp_path / "bad.yaml")


FULL_PROFILES = sorted(p.name for p in (Path(__file__).parents[2] / "profiles").glob("full*.yaml"))


def test_the_full_profiles_are_all_checked():
    assert {
        "full.yaml",
        "full-144.yaml",
        "full-balanced.yaml",
        "full-paper.yaml",
        "full-prints.yaml",
        "full-fast.yaml",
        "full-long.yaml",
        "full-long-balanced.yaml",
    } <= set(FULL_PROFILES)


@pytest.mark.parametrize("name", FULL_PROFILES)
def test_every_shipped_profile_is_valid_against_the_params(repo, pipeline_dir, name):
    sets = dict(a.split("=", 1) for a in profile_overrides(repo / "profiles" / name)[1::2])
    assert sets["split.test_size"] == "2000"
    # the sample (params.yaml) weights the ground truth by age; each full profile sets the knob
    # itself, so that the frozen runs before it (full-v10 and older) rebuild as they ran
    weighted = {"full-balanced.yaml": "0.25", "full-prints.yaml": "0.25", "full-fast.yaml": "0.25",
                "full-long.yaml": "0.25", "full-long-balanced.yaml": "0.4"}  # fmt: skip
    if name in weighted:
        assert sets["distill.age_balance"] == weighted[name] and sets["student.input_size"] == "128"
    else:
        assert sets["distill.age_balance"] == "0.0"


def test_full_prints_is_full_balanced_with_old_prints(repo):
    prints = load_profile(repo / "profiles" / "full-prints.yaml")
    balanced = load_profile(repo / "profiles" / "full-balanced.yaml")
    assert prints["distill"].pop("teachers_read_clean") is True
    assert prints["distill"]["train"].pop("scan") == 0.3
    assert prints == balanced


def test_full_fast_is_full_prints_with_a_112_px_class_teacher(repo):
    fast = load_profile(repo / "profiles" / "full-fast.yaml")
    prints = load_profile(repo / "profiles" / "full-prints.yaml")
    sides = fast["class_teacher"]["input_size"], prints["class_teacher"]["input_size"]
    assert sides == (112, 144)
    fast["class_teacher"]["input_size"] = 144
    assert fast == prints


def test_full_long_is_full_fast_with_30_distillation_epochs(repo):
    long = load_profile(repo / "profiles" / "full-long.yaml")
    fast = load_profile(repo / "profiles" / "full-fast.yaml")
    assert long["distill"]["train"].pop("epochs") == 30
    assert fast["distill"]["train"].pop("epochs") == 20
    assert long == fast


def test_full_long_balanced_is_full_long_with_rare_ages_weighted_more(repo):
    balanced = load_profile(repo / "profiles" / "full-long-balanced.yaml")
    long = load_profile(repo / "profiles" / "full-long.yaml")
    weights = balanced["distill"].pop("age_balance"), long["distill"].pop("age_balance")
    assert weights == (0.4, 0.25)
    assert balanced == long


def test_sample_144_profile_is_valid_and_keeps_the_sample_data(repo, pipeline_dir):
    sets = dict(
        a.split("=", 1) for a in profile_overrides(repo / "profiles" / "sample-144.yaml")[1::2]
    )
    assert sets["align.size"] == "144" and sets["student.input_size"] == "128"
    assert "align.sources" not in sets


def test_a_profile_builds_on_its_base(tmp_path):
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump(
            {"split": {"test_size": 2000, "val_fraction": 0.1}, "distill": {"mixup": 0.2}}
        )
    )
    (tmp_path / "b.yaml").write_text(
        yaml.safe_dump(
            {"base": "a.yaml", "split": {"test_size": 500}, "student": {"input_size": 128}}
        )
    )
    assert load_profile(tmp_path / "b.yaml") == {
        "split": {"test_size": 500, "val_fraction": 0.1},
        "distill": {"mixup": 0.2},
        "student": {"input_size": 128},
    }


def test_shipped_full_144_is_full_with_its_own_keys(repo):
    full = load_profile(repo / "profiles" / "full.yaml")
    own = yaml.safe_load((repo / "profiles" / "full-144.yaml").read_text())
    assert own.pop("base") == "full.yaml"
    merged = load_profile(repo / "profiles" / "full-144.yaml")
    assert merged == merge(full, own)
    assert merged["align"]["sources"] == full["align"]["sources"]


def test_a_missing_base_or_a_loop_of_bases_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ProfileError, match=r"gone\.yaml \(the base of a\.yaml\)"):
        load_profile(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ProfileError, match=r"loop: b\.yaml -> c\.yaml -> b\.yaml"):
        load_profile(tmp_path / "b.yaml")
