"""Named parameter profiles: a YAML file of overrides turned into one ``dvc exp run``.

``agedistill exp profiles/full.yaml`` runs the pipeline with every key of the profile set by
``-S key=value``. A profile may build on another with ``base: other.yaml`` (a path relative to
the profile's folder): the base's keys are laid down first, then the profile's. Source folders
under ``align.sources`` are made absolute against the main repository, so the same
profile works in the workspace, under ``--temp`` and in the queue.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from agedistill.config import parse_params, raw_params
from agedistill.pipeline.tracking import main_repo_root


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the nested mapping ``over`` laid on top (leaves replaced, sections merged)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _leaves(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def hydra_value(value: Any) -> str:
    """A value in the override grammar ``dvc exp run -S`` parses (Hydra's).

    >>> hydra_value([{"path": "/data/x y", "reader": "utkface"}])
    "[{path:'/data/x y',reader:'utkface'}]"
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


class ProfileError(ValueError):
    """A profile that cannot be read: a missing base, or bases that form a loop."""


def load_profile(profile: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The profile's overrides with its ``base:`` chain merged in (the base first)."""
    path = Path(profile).resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise ProfileError(f"profile bases form a loop: {chain}")
    if not path.is_file():
        where = f" (the base of {_seen[-1].name})" if _seen else ""
        raise ProfileError(f"profile not found: {path}{where}")
    over = yaml.safe_load(path.read_text()) or {}
    if not isinstance(over, dict):
        raise ProfileError(f"{path.name}: a profile is a mapping of params sections")
    base = over.pop("base", None)
    if base is None:
        return over
    if not isinstance(base, str):
        raise ProfileError(f"{path.name}: base must be a file name, got {base!r}")
    return merge(load_profile(path.parent / base, (*_seen, path)), over)


def profile_overrides(profile: str | Path, params: str | Path = "params.yaml") -> list[str]:
    """``-S`` arguments for ``dvc exp run`` that apply ``profile`` on top of ``params``.

    The merged params are validated first, so a bad profile fails before DVC starts.
    """
    over = load_profile(profile)
    root = main_repo_root()
    for src in over.get("align", {}).get("sources", []):  # (a csv is relative to its path)
        if src.get("path") and not Path(src["path"]).is_absolute():
            src["path"] = str((root / src["path"]).resolve())
    parse_params(merge(raw_params(params), over))
    args = []
    for key, value in _leaves(over):
        args += ["-S", f"{key}={hydra_value(value)}"]
    return args


def run_profile(profile: str | Path, extra: list[str] | None = None) -> int:
    """Run ``dvc exp run`` with the profile's overrides plus ``extra`` DVC arguments."""
    cmd = ["dvc", "exp", "run", *profile_overrides(profile), *(extra or [])]
    print("+", " ".join(cmd))
    return subprocess.call(cmd)
