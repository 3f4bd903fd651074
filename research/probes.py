"""What the one-teacher probes share (``teacher_probe``, ``rank_probe``): the command line, a
probe's folder, and the table of probes beside the workspace's own teacher."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research.ablation import Workspace, with_overrides


@dataclass(frozen=True)
class ProbeKind:
    """Which teacher a probe retrains, and how its table reads."""

    section: str  # the params section a probe may change, e.g. "class_teacher"
    folder: str  # the probes' parent folder under the workspace, e.g. "teacher-probe"
    stem: str  # the table's file name, e.g. "teacher_probe"
    val_key: str  # the fit's validation figure in each row, e.g. "best_val_mae"
    val_head: str  # its column head, e.g. "val MAE"


def add_probe_args(ap: argparse.ArgumentParser, kind: ProbeKind) -> None:
    """The options every probe command takes."""
    ap.add_argument("--workspace", type=Path, default=Path("."), help="a finished pipeline")
    ap.add_argument("--out", type=Path,
                    help=f"probes' parent folder (default <workspace>/{kind.folder})")  # fmt: skip
    ap.add_argument("--name", help="run: the probe's folder name")
    ap.add_argument("--set", action="append", default=[], metavar=f"{kind.section}.KEY=VALUE",
                    help=f"run: change a {kind.section} param (repeatable)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the params')")
    ap.add_argument("--metrics", type=Path, default=Path(f"results/research/{kind.stem}"))


def start_probe(
    ws: Workspace, args: argparse.Namespace, kind: ProbeKind, ap: argparse.ArgumentParser
) -> tuple[Workspace, Path]:
    """The probe's workspace (its params written) and its folder, from ``--name`` and ``--set``."""
    if not args.name or not args.set:
        ap.error(f"run needs --name and at least one --set {kind.section}.KEY=VALUE")
    out = probes_root(args, kind) / args.name
    probe = with_overrides(ws, args.set, out, section=kind.section)
    (out / "sets.txt").write_text("\n".join(args.set) + "\n")
    return probe, out


def probes_root(args: argparse.Namespace, kind: ProbeKind) -> Path:
    """The folder holding every probe's folder."""
    return args.out or args.workspace / kind.folder


def row(name: str, test: dict[str, Any], fit: dict[str, Any], kind: ProbeKind) -> dict[str, Any]:
    """One table row: the teacher's validation figure, wall time and test MAE per source."""
    return {
        "name": name, kind.val_key: fit.get(kind.val_key), "train_wall_s": fit.get("train_wall_s"),
        "test_mae": test["mae"], "test_mae_flip": test["mae_flip"],
        "by_source": {s: {"mae": v["mae"], "mae_flip": v["mae_flip"]}
                      for s, v in test.get("by_source", {}).items()},
    }  # fmt: skip


def table(
    own_test: dict[str, Any], own_fit: dict[str, Any], root: Path, kind: ProbeKind
) -> list[dict[str, Any]]:
    """The workspace's teacher (its test metrics and fit), then every finished probe under
    ``root``, as table rows."""
    rows = [row("workspace", own_test, own_fit, kind)]
    for path in sorted(root.glob("*/result.json")):
        r = json.loads(path.read_text())
        sets = (path.parent / "sets.txt").read_text().split()
        rows.append({**row(path.parent.name, r["test"], r["fit"], kind), "sets": sets})
    return rows


def format_rows(rows: list[dict[str, Any]], kind: ProbeKind) -> str:
    """The rows of :func:`table` as a Markdown table, one column per test source."""
    sources = sorted(rows[0]["by_source"])
    head = ["probe", "changes", kind.val_head, *sources, "all", "all with flip", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["name"], " ".join(r.get("sets", [])) or "(the run's own)",
                 f"{r[kind.val_key]:.3f}" if r[kind.val_key] is not None else "",
                 *(f"{r['by_source'][s]['mae']:.3f}" for s in sources),
                 f"{r['test_mae']:.3f}", f"{r['test_mae_flip']:.3f}",
                 f"{r['train_wall_s']:.0f}" if r["train_wall_s"] else ""]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(rows: list[dict[str, Any]], metrics: Path, kind: ProbeKind) -> None:
    """Write the table as ``<stem>.json`` and ``<stem>.md`` under ``metrics``; print it."""
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / f"{kind.stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (metrics / f"{kind.stem}.md").write_text(format_rows(rows, kind) + "\n")
    print(format_rows(rows, kind))


def run_or_table(
    args: argparse.Namespace,
    ap: argparse.ArgumentParser,
    kind: ProbeKind,
    train: Callable[[Workspace, Path, int], Any],
    own: Callable[[Workspace, Path], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """``run``: train one probe with ``train``; then (``run`` or ``table``) write the table, the
    workspace's own teacher first (``own`` gives its test metrics and fit)."""
    ws = Workspace.of(args.workspace)
    ws.check()
    if args.cmd == "run":
        probe, out = start_probe(ws, args, kind, ap)
        train(probe, out, args.threads)
    root = probes_root(args, kind)
    write_table(table(*own(ws, root), root, kind), args.metrics, kind)
