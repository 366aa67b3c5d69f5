"""A built wheel, installed into a fresh virtual environment with its dependencies from PyPI, runs the demo.

Slow (minutes: the wheel build, then mlflow, econml, shap, xgboost... downloaded and installed) and needs the
network; run with ``pytest -m slow tests/pipeline/test_wheel_install.py``. It runs outside the source tree, so it
fails when the package needs anything that is not shipped in the wheel (the demo config, the JSON schemas).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("mbi_predict/resources/summary.schema.json", "mbi_predict/resources/model_card.schema.json",
           "mbi_predict/resources/instruments.yaml", "mbi_predict/resources/demo.yaml")


def _run(command: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the project's sources (the build leaves nothing in the working tree)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "mbi_predict", source / "mbi_predict", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    folder = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder), str(source)],
         cwd=folder, timeout=900)
    (built,) = folder.glob("mbi_predict-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_ships_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in SHIPPED if name not in names] == []
    assert "mbi_predict/pipeline/run.py" in names and "mbi_predict/deploy/pyfunc.py" in names


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, Path]:
    """A fresh virtual environment with the wheel and its dependencies (from PyPI); a work folder outside the
    source tree, so only the installed package can be imported."""
    root = tmp_path_factory.mktemp("fresh")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=root, timeout=3600)
    work = root / "elsewhere"
    work.mkdir()
    return {"env": env_dir, "work": work}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}


@pytest.mark.slow
def test_the_installed_package_is_the_wheel_and_reads_its_resources(installed):
    code = ("import mbi_predict, mbi_predict.pipeline.run; from mbi_predict.pipeline.summary import summary_schema; "
            "print(mbi_predict.__file__); print(summary_schema()['$schema'])")
    done = _run([str(installed["env"] / "bin" / "python"), "-c", code], cwd=installed["work"], timeout=600,
                env=_clean_env())
    assert str(installed["env"]) in done.stdout and "2020-12" in done.stdout
    _run([str(installed["env"] / "bin" / "mbi-predict"), "--help"], cwd=installed["work"], timeout=600,
         env=_clean_env())


@pytest.mark.slow
def test_a_fresh_environment_runs_the_demo_from_the_wheel(installed):
    work = installed["work"]
    _run([str(installed["env"] / "bin" / "mbi-predict"), "demo", "--out", str(work / "demo"),
          "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"], cwd=work, timeout=3600, env=_clean_env())
    summary = json.loads((work / "demo" / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["schema_version"].startswith("1.") and summary["models"]
