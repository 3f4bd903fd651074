"""No function in the package takes more than six positional parameters.

Long positional lists are how ``train_student`` came to take 21 arguments passed by position at
five call sites; beyond six, a function takes a params section, a small frozen dataclass or
keyword-only arguments.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "agedistill"
MAX_POSITIONAL = 6


def positional_counts(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, line, positional parameters) of every def in a file; self/cls excluded."""
    out = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                args = [*child.args.posonlyargs, *child.args.args]
                if in_class and args and args[0].arg in ("self", "cls"):
                    args = args[1:]
                out.append((f"{prefix}{child.name}", child.lineno, len(args)))
                visit(child, f"{prefix}{child.name}.", False)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True)
            else:
                visit(child, prefix, in_class)

    visit(ast.parse(path.read_text(), filename=str(path)), "", False)
    return out


def test_no_function_takes_more_than_six_positional_parameters() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    too_long = [
        f"{p.relative_to(PACKAGE.parent)}:{line} {name} ({n})"
        for p in files
        for name, line, n in positional_counts(p)
        if n > MAX_POSITIONAL
    ]
    assert not too_long, f"more than {MAX_POSITIONAL} positional parameters: {too_long}"


def test_the_count_sees_methods_nested_functions_and_keyword_only_markers(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "class A:\n    def m(self, a, b):\n        def inner(x, y, z): ...\n"
        "def f(a, b, /, c, *, d, e): ...\n"
    )
    assert positional_counts(src) == [("A.m", 2, 2), ("A.m.inner", 3, 3), ("f", 4, 3)]
