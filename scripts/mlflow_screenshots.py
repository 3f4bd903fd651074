"""Screenshots of the MLflow UI over two experiments: the runs table and the compare page.

Runs the bundled sample's pipeline in a copy of the repository (``dvc repro``, then
``dvc exp run -n temp4 -S distill.temperature=4``: about 6 minutes on 2 CPU cores), serves its
store with ``mlflow server`` and photographs the UI in headless Chromium (Debian's
``chromium``):

    python scripts/mlflow_screenshots.py --out docs/img

``--tiny`` photographs the integration tests' tiny pipeline instead (seconds).

Chromium is driven from the command line only (no DevTools client), so the UI state a user
would click into place is set up front: a small local proxy serves the MLflow UI and, on the
same origin, a page that first stores the UI's own preferences (MLflow Assistant panel closed,
runs table columns) in ``localStorage``, then opens the view.
"""

from __future__ import annotations

import argparse
import http.server
import json
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.browser import dump_dom, screenshot  # noqa: E402
from tests.integration.mlflow_server import (  # noqa: E402
    call,
    free_port,
    is_parent,
    mlflow_server,
    params,
    runs,
)  # fmt: skip
from tests.integration.pipeline_repo import two_experiments  # noqa: E402

SEED_PATH = "/__seed"
# the runs table's columns: the headline next to the param that differs
COLUMNS = ["params.`distill.temperature`", "metrics.`student_mae`", "metrics.`twin_mae`",
           "metrics.`gain_over_twin`", "metrics.`class_teacher_mae`", "metrics.`rank_teacher_mae`",
           "metrics.`student_std_coverage`", "metrics.`student_faces_per_s`"]  # fmt: skip


def ui_storage(exp_id: str) -> dict[str, str]:
    """The MLflow UI's ``localStorage`` (keys as MLflow 3.17 writes them): panel shut, columns."""
    state = {"selectedColumns": COLUMNS, "orderByKey": "attributes.start_time",
             "orderByAsc": True, "startTime": "ALL", "lifecycleFilter": "Active",
             "searchFilter": "", "modelVersionFilter": "All Runs",
             "datasetsFilter": []}  # fmt: skip
    return {
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState': json.dumps(
            state
        ),
    }


def _seed_page(storage: dict[str, str], target: str) -> bytes:
    script = "".join(
        f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in storage.items()
    )
    return (f"<!DOCTYPE html><html><body><script>{script}"
            f"location.replace({json.dumps(target)});</script></body></html>").encode()  # fmt: skip


@contextmanager
def ui_proxy(upstream: str, storage: dict[str, str], dump: bool = False) -> Iterator[str]:
    """A localhost proxy in front of ``upstream``; ``/__seed?to=URL`` stores ``storage`` first.

    ``dump``: the UI page also prints its ``localStorage`` into the DOM after 10 s (to learn
    which keys the UI writes).
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _forward(self, body: bytes | None = None) -> None:
            parsed = urllib.parse.urlparse(self.path)
            if parsed.path == SEED_PATH:
                target = urllib.parse.parse_qs(parsed.query)["to"][0]
                self._send(200, "text/html", _seed_page(storage, target))
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
            req = urllib.request.Request(upstream + self.path, data=body, headers=headers,
                                         method=self.command)  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, ctype, data = r.status, r.headers.get("Content-Type", ""), r.read()
            except urllib.error.HTTPError as e:
                status, ctype, data = e.code, e.headers.get("Content-Type", ""), e.read()
            if dump and ctype.startswith("text/html") and b"</body>" in data:
                data = data.replace(b"</body>", b"<script>setTimeout(function(){var p=document"
                                    b".createElement('pre');p.id='storage';p.textContent=JSON."
                                    b"stringify(localStorage);document.body.appendChild(p)},"
                                    b"10000)</script></body>")  # fmt: skip
            self._send(status, ctype, data)

        def _send(self, status: int, ctype: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._forward()

        def do_POST(self):
            self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        do_PATCH = do_POST

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument(
        "--repo", type=Path, help="an existing two-experiment copy (default: build one)"
    )
    ap.add_argument("--dump-storage", action="store_true", help="print the UI's localStorage")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny pipeline, not the sample")
    args = ap.parse_args()
    repo = args.repo
    if repo is None:
        repo = Path(tempfile.mkdtemp(prefix="mlflow-screens-"))
        two_experiments(ROOT, repo, tiny=args.tiny)
    with mlflow_server(repo) as base:
        exp = call(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=agedistill")
        exp_id = exp["experiment"]["experiment_id"]
        parents = [r for r in runs(base) if is_parent(r)]
        parents.sort(key=lambda r: float(params(r)["distill.temperature"]))
        ids = [r["info"]["run_id"] for r in parents]
        if args.dump_storage:
            with ui_proxy(base, {}, dump=True) as proxy:
                print(dump_dom(f"{proxy}/#/experiments/{exp_id}/runs", budget_ms=15_000))
            return
        with ui_proxy(base, ui_storage(exp_id)) as proxy:
            views = {
                "mlflow_runs.png": f"#/experiments/{exp_id}/runs",
                "mlflow_compare.png": (
                    f"#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([exp_id])}"
                ),
            }
            sizes = {"mlflow_runs.png": (1600, 420), "mlflow_compare.png": (1600, 2000)}
            for name, view in views.items():
                url = f"{proxy}{SEED_PATH}?to={urllib.parse.quote('/' + view)}"
                print(f"wrote {screenshot(url, args.out / name, size=sizes[name])}")


if __name__ == "__main__":
    main()
