"""dvc.yaml's deps cover every module a stage imports, and the product never imports research/.

A stage's import closure is computed from the source (ast): its module under ``stages/`` (and the
launcher its ``cmd`` runs), then every ``agedistill``/``stages``/``research`` module those import,
at the top or inside a function, with the ``__init__.py`` of each package on the way. A module
file in the closure that no ``deps`` entry (the file itself or a folder above it) names is a
dependency DVC does not know about: an edit there would not rerun the stage.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ("agedistill", "stages", "research")


def module_file(module: str) -> Path | None:
    """The source file of a local module (``pkg/__init__.py`` for a package), or None."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path) -> set[str]:
    """Local modules named by the import statements of one file (anywhere in it)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] in LOCAL and module_file(n)}


def import_closure(modules: list[str]) -> set[Path]:
    """Every local module file that importing ``modules`` runs, package ``__init__``s included."""
    todo, seen = list(modules), set()
    files: set[Path] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        path = module_file(mod)
        if path is None:
            continue
        files.add(path)
        todo.extend(_imported(path))
    return files


def stage_modules(cmd: str) -> list[str]:
    """The Python modules a stage's command runs: ``-m MODULE`` and any ``stages.NAME`` argument."""
    return re.findall(r"-m\s+([\w.]+)", cmd) + re.findall(r"\b(stages\.\w+)\b", cmd)


def _stages() -> dict[str, dict]:
    """Each stage's definition; a ``foreach`` stage is checked through its ``do`` template."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _runs_code(path: Path) -> bool:
    """False for an ``__init__.py`` that holds only a docstring (importing it runs nothing)."""
    body = ast.parse(path.read_text()).body
    docstring = (
        bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    )
    return len(body) > (1 if docstring else 0)


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    if path.name == "__init__.py" and not _runs_code(path):
        return True
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_imported_module_is_a_dependency_of_the_stage(stage: str) -> None:
    spec = _stages()[stage]
    modules = stage_modules(spec["cmd"])
    assert modules, f"{stage}: no python module found in its cmd"
    closure = import_closure(modules)
    missing = sorted(str(p.relative_to(ROOT)) for p in closure if not _covered(p, spec["deps"]))
    assert not missing, f"dvc.yaml stage {stage!r} imports files its deps do not cover: {missing}"


def test_the_closure_follows_imports_inside_functions_and_packages() -> None:
    closure = {str(p.relative_to(ROOT)) for p in import_closure(["stages.distill"])}
    # the training stages use precision.py (the dependency dvc.yaml once forgot)
    assert "agedistill/training/precision.py" in closure
    # models/__init__.py runs on every import of agedistill.models.*, and re-exports nets.py
    assert {"agedistill/models/__init__.py", "agedistill/models/nets.py"} <= closure
    # agedistill/__init__.py holds the version every model file records
    assert "agedistill/__init__.py" in closure
    # tracking imports models.files inside Tracker.log_student: still part of the closure
    assert "agedistill/models/files.py" in {
        str(p.relative_to(ROOT)) for p in import_closure(["agedistill.pipeline.tracking"])
    }


def test_a_dependency_dvc_yaml_misses_is_reported() -> None:
    spec = _stages()["distill"]
    closure = import_closure(stage_modules(spec["cmd"]))
    deps = [d for d in spec["deps"] if not d.startswith("agedistill/training")]
    assert not all(_covered(p, deps) for p in closure)


PRODUCT = [
    *(f"stages.{s}" for s in _stages()),
    "agedistill.cli",
    "agedistill.serving.predict",
    "agedistill.serving.export",
    "agedistill.training.launch",
]


def test_nothing_the_pipeline_or_predict_runs_imports_research() -> None:
    closure = import_closure(PRODUCT)
    assert not [p for p in closure if "research" in p.relative_to(ROOT).parts]
    # the research scripts do reach into the package (so the check is not vacuous)
    assert any("research" in p.parts for p in import_closure(["research.run_ablation"]))


def test_the_twin_stage_reruns_when_a_param_it_trains_by_changes() -> None:
    from agedistill.training.recipes import TWIN_DISTILL_FIELDS

    params = set(_stages()["twin"]["params"])
    missing = {f"distill.{f}" for f in TWIN_DISTILL_FIELDS} - params
    assert not missing, f"dvc.yaml's twin stage does not list {sorted(missing)}"


# keys of a stage's own params section that another stage reads instead (and lists)
READ_ELSEWHERE = {"rank_teacher.hint_stage": "distill"}


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = _stages()


@pytest.mark.parametrize("stage", [s for s in STAGES if isinstance(PARAMS.get(s), dict)])
def test_every_key_of_a_stage_section_reruns_the_stage(stage: str) -> None:
    """`dvc exp run -S <stage>.<key>=...` reruns the stage for every key of its section."""
    listed = set(STAGES[stage]["params"])
    missing = [
        f"{stage}.{key}" for key in PARAMS[stage]
        if stage not in listed and f"{stage}.{key}" not in listed
        and f"{stage}.{key}" not in READ_ELSEWHERE
    ]  # fmt: skip
    assert not missing, f"dvc.yaml's {stage} stage does not list {missing}"
    for key, reader in READ_ELSEWHERE.items():
        assert key in set(STAGES[reader]["params"]), f"{reader} does not list {key}"
