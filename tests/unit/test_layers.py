"""Each part of the package imports only the parts its ``__init__`` docstring allows.

The parts are the subpackages and the top-level modules; an import of another part anywhere in a
file (at the top or inside a function) counts. ``research`` and ``stages`` sit outside: nothing in
the package may import them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agedistill"

# part -> the parts it may import ("agedistill": the package's own __init__, i.e. __version__)
ALLOWED = {
    "models": {"agedistill"},
    "data": set(),
    "onnx_sessions": set(),  # per-process ONNX Runtime sessions: a leaf anyone may use
    "faces": {"config", "onnx_sessions"},
    "config": {"faces", "models"},  # DETECT_PAD and stage_sides, validated against
    "serving": {"agedistill", "models", "faces", "onnx_sessions"},
    "evaluation": {"config", "models", "data", "serving"},
    "pipeline": {"config", "models", "data"},
    "training": {"config", "models", "data", "faces", "pipeline"},
    "cli": {"config", "models", "faces", "evaluation", "pipeline", "serving", "onnx_sessions"},
}


def part_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    return "agedistill" if rel == ("__init__",) else rel[0]


def part_of_module(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "agedistill" else (parts[1] if len(parts) > 1 else "agedistill")


def imports_between_parts() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the ``file: module`` imports that make the edge."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        part = part_of_file(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            else:
                continue
            for m in modules:
                if m.split(".")[0] in ("agedistill", "research", "stages"):
                    other = part_of_module(m)
                    if other != part:
                        edges = graph.setdefault(part, {}).setdefault(other, set())
                        edges.add(f"{path.relative_to(ROOT)}: {m}")
    return graph


def test_every_part_imports_only_what_it_may() -> None:
    graph = imports_between_parts()
    assert set(graph) <= set(ALLOWED), f"parts without rules: {set(graph) - set(ALLOWED)}"
    bad = {
        f"{part} -> {other}": sorted(edges)
        for part, targets in graph.items()
        for other, edges in targets.items()
        if other not in ALLOWED[part]
    }
    assert not bad, f"imports a part may not make: {bad}"


def test_the_rules_are_the_ones_the_docstrings_state() -> None:
    for part, allowed in ALLOWED.items():
        init = PACKAGE / part / "__init__.py"
        if not init.is_file():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for other in allowed - {"agedistill"}:
            assert other in doc, f"{init}: docstring does not allow {other}"


def test_the_graph_sees_imports_inside_functions() -> None:
    # the cli imports predict only when the predict command runs
    assert "serving" in imports_between_parts()["cli"]
