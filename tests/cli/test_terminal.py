"""Tables people read in a terminal: 80 columns, --json and --csv, one-line errors; and the `report` command.

A small experiment is run once through the CLI (`run --figure-format svg --dpi 160`, tracked in a temporary
store) for `compare`, `report` and the figure settings."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from mbi_predict.cli import app
from mbi_predict.data.simulate import simulate_latent

runner = CliRunner()
NARROW = {"COLUMNS": "80"}


@pytest.fixture(scope="module")
def demo_ipd(tmp_path_factory):
    """The demo consortium (the simulator's defaults: 13 trials, 2,371 participants)."""
    path = tmp_path_factory.mktemp("demo") / "ipd.parquet"
    simulate_latent("galante2023", seed=2023).ipd.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, demo_ipd):
    folder = tmp_path_factory.mktemp("run")
    config = {
        "experiment": "terminal_test", "data": {"path": str(demo_ipd)}, "outcome": "distress_fu1_6",
        "covariates": ["age", "gender", "baseline_distress", "baseline_wellbeing"],
        "models": [{"name": "reference", "kind": "prognostic", "estimator": "reference"},
                   {"name": "elastic_net", "kind": "prognostic", "estimator": "elastic_net"},
                   {"name": "t_learner_enet", "kind": "effect", "estimator": "t_learner_enet"}],
        "validation": {"scheme": "loto", "bootstrap": 20, "n_jobs": 1},
        "heterogeneity": {"calibration": "none"},
        "figures": {"format": "pdf", "dpi": 300},   # the options below win over the config's block
        "seed": 1}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{folder}/mlflow.db"
    result = runner.invoke(app, ["run", str(path), "--out", str(folder / "out"), "--tracking-uri", uri,
                                 "--no-progress", "--figure-format", "svg", "--dpi", "160"], env=NARROW)
    assert result.exit_code == 0, result.output
    return folder / "out", uri, result.output


def _lines_fit(output: str, width: int = 80) -> None:
    """Every line we print fits; log records of libraries (MLflow's "INFO ..." when a store is created in this
    process) are not ours to wrap."""
    ours = [line for line in output.splitlines() if not re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", line)]
    long = [line for line in ours if len(line) > width]
    assert long == [], "\n".join(long)


def test_describe_fits_80_columns_and_prints_json_and_csv(demo_ipd):
    result = runner.invoke(app, ["describe", str(demo_ipd)], env=NARROW)
    assert result.exit_code == 0, result.output
    _lines_fit(result.output)
    assert "T13" in result.output and len(result.output.splitlines()) < 80
    records = json.loads(runner.invoke(app, ["describe", str(demo_ipd), "--json"]).stdout)
    assert len(records) == 13 and {"trial_id", "n", "n_mbi", "pct_female"} <= set(records[0])
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["describe", str(demo_ipd), "--csv"]).stdout)))
    assert [row["trial_id"] for row in rows] == [r["trial_id"] for r in records]


def test_describe_follows_a_wider_terminal(demo_ipd):
    wide = runner.invoke(app, ["describe", str(demo_ipd)], env={"COLUMNS": "200"}).output
    narrow = runner.invoke(app, ["describe", str(demo_ipd)], env=NARROW).output
    assert max(map(len, wide.splitlines())) <= 200
    assert len(wide.splitlines()) <= len(narrow.splitlines())


def test_run_leaderboard_fits_and_figures_follow_the_options(tracked_run):
    out, _, output = tracked_run
    _lines_fit(output)
    plots = sorted(p.suffix for p in (out / "plots").iterdir())
    assert plots and set(plots) == {".svg"}     # --figure-format svg beat the config's figures: pdf


def test_compare_fits_80_columns_and_prints_json_and_csv(tracked_run):
    _, uri, _ = tracked_run
    result = runner.invoke(app, ["compare", "--tracking-uri", uri], env=NARROW)
    assert result.exit_code == 0, result.output
    _lines_fit(result.output)
    assert "elastic_net" in result.output and "t_learner_enet" in result.output
    ranked = runner.invoke(app, ["compare", "--tracking-uri", uri, "--metric", "rmse"], env=NARROW)
    assert ranked.exit_code == 0 and "RMSE" in ranked.output
    _lines_fit(ranked.output)
    records = json.loads(runner.invoke(app, ["compare", "--tracking-uri", uri, "--json"]).stdout)
    assert {r["model"] for r in records} == {"reference", "elastic_net", "t_learner_enet"}
    assert all(isinstance(r["start_time"], str) for r in records)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["compare", "--tracking-uri", uri, "--csv"]).stdout)))
    assert len(rows) == 3 and "rmse_ci_low" in rows[0]


def test_unknown_metric_is_one_line_exit_2(tracked_run):
    _, uri, _ = tracked_run
    result = runner.invoke(app, ["compare", "--tracking-uri", uri, "--metric", "rmze"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown metric 'rmze'" in lines[0] and "rmse" in lines[0]


def test_report_writes_one_page_and_logs_it(tracked_run, tmp_path):
    import mlflow

    out, uri, _ = tracked_run
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "study.html"), "--tracking-uri", uri],
                           env=NARROW)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "study.html").is_file() and (tmp_path / "study.md").is_file()
    page = (tmp_path / "study.html").read_text()
    assert "data:image/svg+xml;base64," in page   # the run's SVG figures are embedded as they are
    run_id = json.loads((out / "summary.json").read_text())["mlflow_run_id"]
    logged = [a.path for a in mlflow.MlflowClient(tracking_uri=uri).list_artifacts(run_id, "report")]
    assert "report/study.html" in logged and "report/study.md" in logged


@pytest.mark.parametrize("args,needle", [
    (["report", "no_such_run", "--out", "{tmp}/r.html"], "no_such_run"),
    (["report", "{tmp}", "--out", "{tmp}/r.html"], "no summary.json"),
    (["report", "{tmp}", "--figure-format", "pdf"], "png or svg"),
    (["run", "{tmp}/c.yaml", "--figure-format", "gif"], "png, svg, pdf"),
    (["run", "{tmp}/c.yaml", "--dpi", "5"], "between 50 and 1200"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.md").exists()
