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
    mlflow.MlflowClient(uri).create_experiment("drive_vessel", artifact_location=(tmp_path / "mlartifacts").as_uri())
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


def _has_ss() -> bool:
    try:
        return subprocess.run(["ss", "-V"], capture_output=True).returncode == 0
    except OSError:
        return False
