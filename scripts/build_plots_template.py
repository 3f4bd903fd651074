"""Build ``plots/offline.html``: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined.

DVC's own page loads the three libraries from a CDN, so without internet ``dvc plots show`` writes
a blank page. This template carries them inside (from their npm packages) and is the project's
``plots.html_template`` (``.dvc/config``). Their licences, and those of the packages their bundles
include, go to ``plots/licenses/``.

    npm install --prefix /tmp/vega vega@5 vega-lite@5 vega-embed@6
    python scripts/build_plots_template.py --node-modules /tmp/vega/node_modules

The page also makes every chart draw as SVG (DVC calls ``vegaEmbed(el, spec)``, whose default is
a canvas), so the charts are part of the page's DOM, print sharp, and a test can find their marks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LIBRARIES = ("vega", "vega-lite", "vega-embed")
# the vega package ships no LICENSE file; the packages of its monorepo (vega/vega) ship this one
LICENSE_OF = {"vega": "vega-view"}

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- Offline: {versions} inlined from their npm packages
         (BSD-3-Clause; licences in plots/licenses/). Rebuilt by scripts/build_plots_template.py -->
{libraries}
    <script type="text/javascript">
    // Draw as SVG (DVC calls vegaEmbed(el, spec); its default renderer is a canvas) and keep
    // only the export actions (the editor links need the internet).
    (function () {
        var embed = window.vegaEmbed;
        window.vegaEmbed = function (el, spec, opts) {
            var base = {renderer: "svg", actions: {export: true, source: false, compiled: false,
                                                   editor: false}};
            return embed(el, spec, Object.assign(base, opts || {}));
        };
    })();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def version(node_modules: Path, name: str) -> str:
    """The version of an installed npm package."""
    return json.loads((node_modules / name / "package.json").read_text())["version"]


def library_script(node_modules: Path, name: str) -> str:
    """One ``<script>`` element holding a library's minified browser build."""
    code = (node_modules / name / "build" / f"{name}.min.js").read_text(encoding="utf8")
    if "</script" in code.lower():
        raise ValueError(f"{name}.min.js contains '</script': it cannot be inlined as is")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in code:  # DVC fills these by str.replace over the whole page
            raise ValueError(f"{name}.min.js contains DVC's placeholder {placeholder}")
    head = f'    <script type="text/javascript">/* {name} {version(node_modules, name)} */'
    return f"{head}\n{code}\n    </script>"


def license_file(package: Path) -> Path | None:
    """A package's LICENSE/LICENCE file, if it ships one."""
    names = ("license", "licence")
    found = sorted(p for p in package.iterdir() if p.name.lower().startswith(names))
    return found[0] if found else None


def packages(node_modules: Path) -> list[Path]:
    """Every installed package folder (scoped ones included)."""
    out = []
    for p in sorted(node_modules.iterdir()):
        if p.name.startswith("@"):
            out.extend(sorted(q for q in p.iterdir() if (q / "package.json").is_file()))
        elif (p / "package.json").is_file():
            out.append(p)
    return out


def write_licenses(node_modules: Path, folder: Path) -> None:
    """The three libraries' licences, one file each, and every installed package's in one file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in LIBRARIES:
        src = license_file(node_modules / LICENSE_OF.get(name, name))
        if src is None:
            raise FileNotFoundError(f"no licence file for {name} in {node_modules}")
        note = f"{name} {version(node_modules, name)} (npm), BSD-3-Clause"
        if name in LICENSE_OF:
            note += f"; text from {LICENSE_OF[name]}, its monorepo's packages ship it"
        (folder / f"{name}.txt").write_text(f"{note}\n\n{src.read_text(encoding='utf8')}")
    parts = ["Packages installed with vega, vega-lite and vega-embed (their bundles include the",
             "runtime ones), with the licence each declares and the text it ships.\n"]  # fmt: skip
    for pkg in packages(node_modules):
        meta = json.loads((pkg / "package.json").read_text())
        name = pkg.relative_to(node_modules).as_posix()
        lic = license_file(pkg)
        text = lic.read_text(encoding="utf8", errors="replace") if lic else "(no licence file)\n"
        parts.append(f"==== {name} {meta.get('version')} ({meta.get('license')}) ====\n{text}")
    (folder / "THIRD_PARTY.txt").write_text("\n".join(parts))


def build(node_modules: Path, out: Path) -> Path:
    """Write the template to ``out`` and the licences to ``out``'s folder's ``licenses/``."""
    versions = ", ".join(f"{n} {version(node_modules, n)}" for n in LIBRARIES)
    libraries = "\n".join(library_script(node_modules, n) for n in LIBRARIES)
    page = PAGE.replace("{versions}", versions).replace("{libraries}", libraries)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf8")
    write_licenses(node_modules, out.parent / "licenses")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--node-modules", type=Path, required=True, help="where npm installed them")
    ap.add_argument("--out", type=Path, default=Path("plots/offline.html"))
    args = ap.parse_args()
    print(f"wrote {build(args.node_modules, args.out)}")


if __name__ == "__main__":
    main()
