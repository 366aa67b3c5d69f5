"""A logged final model rebuilds anywhere: a fresh virtual environment built only from the model's own
requirements.txt (no mbi-predict installed: the package ships with the model through ``code_paths``) loads it,
scores rows, and serves it with ``mlflow models serve``. Needs PyPI; slow (minutes: it installs MLflow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from track_data import FEATURES

pytestmark = pytest.mark.slow

SCORE = """
import json, sys
import pandas as pd
import mlflow.pyfunc
try:
    import mbi_predict  # noqa: F401
    sys.exit("mbi_predict is importable before loading: the test would prove nothing")
except ImportError:
    pass
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.DataFrame(json.loads(sys.argv[2]))
print(model.predict(rows).to_json(orient="records"))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_model_loads_and_serves_in_a_fresh_environment(store, fitted, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from mbi_predict.deploy import synthetic_example
    from mbi_predict.track import ExperimentRun

    pipeline, X, envelope = fitted
    with ExperimentRun(store, "fresh_env", models=[{"name": "elastic_net", "estimator": "elastic_net"}]) as run:
        uri = run.log_final_model("elastic_net", pipeline, kind="prognostic", features=FEATURES, task="continuous",
                                  envelope=envelope)
    location = MlflowClient(store).get_logged_model(uri.removeprefix("models:/")).artifact_location
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path / "model")))
    rows = synthetic_example(envelope, FEATURES)
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(rows)

    work = tmp_path / "elsewhere"  # not the repository: nothing of mbi_predict on sys.path
    work.mkdir()
    venv = tmp_path / "venv"
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=work, env=env, timeout=300)
    python, mlflow_cli = venv / "bin" / "python", venv / "bin" / "mlflow"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # as if activated: serve execs uvicorn
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--only-binary", ":all:", "-r",
                              str(model_dir / "requirements.txt")], cwd=work, env=env, capture_output=True, text=True,
                             timeout=1800)
    assert install.returncode == 0, install.stderr[-2000:]

    payload = json.dumps(rows.to_dict(orient="list"))
    scored = subprocess.run([str(python), "-c", SCORE, str(model_dir), payload], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    out = json.loads(scored.stdout.strip().splitlines()[-1])
    assert out[0]["prediction"] == pytest.approx(float(expected["prediction"].iloc[0]), rel=1e-9)
    assert out[0]["out_of_distribution"] is False

    port = _free_port()
    server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the model server did not answer /ping in 180 s"
            time.sleep(1)
        body = json.dumps({"dataframe_split": {"columns": list(rows.columns),
                                               "data": rows.to_numpy().tolist()}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        prediction = answer["predictions"][0]["prediction"]
        assert prediction == pytest.approx(float(expected["prediction"].iloc[0]), rel=1e-9)
    finally:
        os.killpg(server.pid, 15) if server.poll() is None else None
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
