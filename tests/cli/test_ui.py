"""`cnf ui` serves the project's store on 127.0.0.1 (a real MLflow server, started and stopped)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("drive_vessel", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(exp, run_name="calibrate", tags={"model": "cnf+factored"})
    for step, value in enumerate([0.5, 0.7]):
        client.log_metric(run.info.run_id, "cnf/max_f", value, step=step)
    (tmp_path / "pr_curves.png").write_bytes(b"\x89PNG-not-really")
    client.log_artifact(run.info.run_id, str(tmp_path / "pr_curves.png"), artifact_path="calibration")
    client.set_terminated(run.info.run_id)
    port = _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "monai_cnf.cli", "ui", "--tracking-uri", uri, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the MLflow UI did not answer within 180 s"
            time.sleep(0.5)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            names = [e["name"] for e in json.load(r)["experiments"]]
        assert "drive_vessel" in names
        # the runs, a metric's history and an artifact, back through the server's REST API
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        found = _post(f"{api}/runs/search", {"experiment_ids": [exp], "filter": "tags.model = 'cnf+factored'"})
        assert [r["info"]["run_id"] for r in found["runs"]] == [run.info.run_id]
        rid = run.info.run_id
        with urllib.request.urlopen(f"{api}/metrics/get-history?run_id={rid}&metric_key=cnf/max_f", timeout=10) as r:
            assert [m["value"] for m in json.load(r)["metrics"]] == [0.5, 0.7]
        with urllib.request.urlopen(f"{api}/artifacts/list?run_id={rid}&path=calibration", timeout=10) as r:
            assert [f["path"] for f in json.load(r)["files"]] == ["calibration/pr_curves.png"]
        get = f"http://127.0.0.1:{port}/get-artifact?path=calibration/pr_curves.png&run_uuid={rid}"
        with urllib.request.urlopen(get, timeout=10) as r:
            assert r.read() == b"\x89PNG-not-really"
        # bound to the loopback interface only
        listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout if _has_ss() else ""
        for line in listening.splitlines():
            if f":{port} " in line:
                assert "127.0.0.1:" in line, line
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: our own process group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _has_ss() -> bool:
    try:
        return subprocess.run(["ss", "-V"], capture_output=True).returncode == 0
    except OSError:
        return False
