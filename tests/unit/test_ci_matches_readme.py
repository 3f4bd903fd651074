"""``.ci/run`` runs the README's test command: the same installs, plus only what the README says."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"# 2\. create the environment and run the test suite.*?\n(.+?)\n", text)
    assert block, "README lost its numbered test command"
    return block.group(1)


def _installs(text: str) -> set[str]:
    """Every ``pip install`` argument list, flags normalised (-q dropped)."""
    found = re.findall(r"pip install ([^&\n]+)", text)
    return {" ".join(a for a in args.split() if a != "-q") for args in found}


def test_ci_installs_what_the_readme_test_command_installs():
    readme, ci = _readme_test_command(), (ROOT / ".ci/run").read_text()
    assert _installs(readme) == _installs(ci)
    assert "pytest" in readme and re.search(r"^\.venv/bin/pytest$", ci, re.M)


def test_every_other_thing_ci_installs_is_in_the_readme():
    ci, readme = (ROOT / ".ci/run").read_text(), (ROOT / "README.md").read_text()
    for package in re.findall(r"apt-get install -y -qq ([\w.+-]+)", ci):
        assert f"apt-get install {package}" in readme, package
    for listed in re.findall(r"-r (\S+)", ci):
        assert (ROOT / listed).is_file() and f"-r {listed}" in readme
