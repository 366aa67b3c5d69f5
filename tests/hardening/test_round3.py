"""Hostile cases found by the third audit of issue 13 (each failed on main before its fix): a run whose input lies
in what the run replaces, a baseline score as outcome with ``covariates: all``, an id as a modifier, duplicate
YAML keys, an unopenable Optuna storage, an IPD table with a repeated header or no rows, implausible ages at
prediction, a card of a model whose name starts another's, and stale figures beside a re-written card or report."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from hardening_helpers import invoke, one_line_error, tree_hashes
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def ipd():
    return check_ipd(simulate_latent("galante2023", seed=2, n_trials=4, n=400).ipd)


def test_run_refuses_an_input_it_would_replace(tmp_path, ipd):
    """`run` retires a previous run's summary.json, plots/ and predictions.parquet: data stored under those names
    in --out would be deleted with exit 0."""
    out = tmp_path / "run"
    for relative in ("predictions.parquet", "plots/ipd.parquet"):
        data = out / relative
        data.parent.mkdir(parents=True, exist_ok=True)
        ipd.to_parquet(data)
        config = tmp_path / "config.yaml"
        config.write_text(f"experiment: guard\ndata: {{path: {data}}}\noutcome: distress_fu1_6\n"
                          "models: [{name: reference, estimator: reference}]\n")
        before = tree_hashes(tmp_path)
        one_line_error(invoke("run", config, "--out", out), str(data))
        assert tree_hashes(tmp_path) == before
        data.unlink()


def test_a_baseline_outcome_leaves_covariates_all(ipd):
    from mbi_predict.validate.loto import prepare_data

    frame = ipd.assign(baseline_distress_raw=ipd["baseline_distress"] * 3 + 10)
    data = prepare_data(frame, outcome="baseline_distress", covariates="all")
    assert "baseline_distress" not in data.covariates and "baseline_distress_raw" not in data.covariates
    assert "baseline_distress" not in data.X.columns and len(data.covariates) >= 3


@pytest.mark.parametrize("column", ["participant_id", "distress_post"])
def test_meta_refuses_ids_and_outcomes_as_modifiers(ipd, column):
    from mbi_predict.meta.interactions import interactions

    with pytest.raises(DataError, match=f"column {column}.*cannot be a treatment-effect modifier"):
        interactions(ipd, "distress_fu1_6", [column])


def test_duplicate_yaml_keys_are_refused():
    from mbi_predict.io import parse_yaml

    with pytest.raises(ConfigError, match=r"line 3.*duplicate key 'seed' \(first at line 1\)"):
        parse_yaml("seed: 1\nexperiment: x\nseed: 2\n", source="cfg.yaml", error=ConfigError)
    with pytest.raises(ConfigError, match="duplicate key 'T03'"):
        parse_yaml("trials:\n  T03: {file: a.csv}\n  T03: {file: b.csv}\n", source="spec.yaml", error=ConfigError)
    # merge keys and aliases are not duplicates
    assert parse_yaml("a: &x {k: 1}\nb:\n  <<: *x\n  m: 2\n", source="f", error=ConfigError)["b"] == {"k": 1, "m": 2}


def test_an_unopenable_optuna_storage_is_a_config_error(tmp_path):
    from types import SimpleNamespace

    from mbi_predict.validate.loto import make_jobs

    config = SimpleNamespace(tuning=SimpleNamespace(storage=f"sqlite:///{tmp_path}/no/such/dir/optuna.db"))
    with pytest.raises(ConfigError, match="tuning.storage cannot be opened"):
        make_jobs(config, None)


def test_ipd_csv_with_a_repeated_header_or_no_rows(tmp_path, ipd):
    from mbi_predict.data.readers import load_ipd

    repeated = tmp_path / "repeated.csv"
    frame = ipd.head(20)
    frame.to_csv(repeated, index=False)
    lines = repeated.read_text().splitlines()
    lines = [line + "," + line.split(",")[list(frame.columns).index("baseline_distress")] for line in lines]
    repeated.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="column baseline_distress: the header names this column more than once"):
        load_ipd(repeated)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(frame.columns) + "\n")
    with pytest.raises(DataError, match="no rows"):
        load_ipd(header_only)


def test_predict_refuses_implausible_ages(tmp_path):
    from mbi_predict.deploy.predict import _refuse_implausible

    frame = pd.DataFrame({"participant_id": ["a", "b", "c"], "age": [30.0, 250.0, np.nan]})
    with pytest.raises(DataError, match=r"column age: 1 value\(s\) outside the plausible range 10 to 110 "
                                        r"\(first in data row 2\)"):
        _refuse_implausible(frame, file="new.csv")
    _refuse_implausible(frame.assign(age=[30.0, 45.0, np.nan]), file="new.csv")
    _refuse_implausible(frame.assign(age=[30.0, np.inf, 40.0]), file="new.csv")  # the signature check's case


def _png() -> str:
    import io

    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    Figure(figsize=(1, 1)).savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_card_figures_belong_to_the_longest_model_name_and_stale_ones_go(tmp_path):
    from mbi_predict.report.card import _figures
    from mbi_predict.report.card_render import write_markdown_figures

    png = base64.b64decode(_png())
    plots = {"plots/forest_path_risk_rmse.png": png, "plots/forest_path_risk_effect_pehe.png": png,
             "plots/shared_overview.png": png}
    models = ["path_risk", "path_risk_effect"]
    own = {f["path"] for f in _figures(plots, "path_risk", models)}
    assert own == {"plots/forest_path_risk_rmse.png", "plots/shared_overview.png"}
    effect = {f["path"] for f in _figures(plots, "path_risk_effect", models)}
    assert effect == {"plots/forest_path_risk_effect_pehe.png", "plots/shared_overview.png"}
    out = tmp_path / "card.md"
    folder = tmp_path / "card_figures"
    folder.mkdir()
    (folder / "forest_old_model_rmse.png").write_bytes(png)
    (folder / "notes.txt").write_text("mine")
    links = write_markdown_figures({"figures": _figures(plots, "path_risk", models)}, out)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(link.split("/")[1] for link in links.values()),
                                                               "notes.txt"])


def test_card_source_names_no_local_path():
    from mbi_predict.report.card import _public_source

    assert _public_source("/home/someone/secret_project/runs/demo") == "run folder demo"
    assert _public_source("mlflow run 0123abcd") == "mlflow run 0123abcd"
    json.dumps(_public_source("runs"))


def test_an_interrupt_while_waiting_for_the_plots_waits_for_the_workers_before_staging_goes(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM that lands while the run waits for its figures (``plots.result()``): the plot workers are
    still writing into the staging folder, so it may only be removed once they have finished (before the fix the
    folder went at once and a worker re-created it, leaving ``.mbi-staging.*/plots/*.png`` in --out)."""
    from types import SimpleNamespace

    import mbi_predict.pipeline.run as pipeline_run

    events: list[str] = []

    class Renderer:
        def __init__(self, tasks, n_jobs):
            self.staging = None

        def result(self):
            events.append("result")
            raise KeyboardInterrupt  # the signal arrives during the join

        def wait(self):
            staging = [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".mbi-staging")]
            events.append(f"wait (staging present: {bool(staging)})")

    monkeypatch.setattr(pipeline_run, "PlotRenderer", Renderer)
    monkeypatch.setattr(pipeline_run, "plot_tasks", lambda finished, folder: [])
    finished = SimpleNamespace(summary={}, inputs=SimpleNamespace(config=SimpleNamespace(
        validation=SimpleNamespace(n_jobs=1))))
    with pytest.raises(KeyboardInterrupt):
        pipeline_run._write(finished, None, tmp_path / "out", False)
    assert events == ["result", "wait (staging present: True)"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_error_after_a_swallowed_sigterm_is_reported_as_the_interrupt(monkeypatch):
    """SIGTERM while sqlalchemy was being imported: the import swallowed the exception and the tracking check then
    failed with "module 'sqlalchemy.sql' has no attribute 'base'" (exit 2, a wrong reason); it is the stop (143)."""
    import typer

    from mbi_predict import interrupts
    from mbi_predict.cli._common import _interrupted_anyway

    monkeypatch.setattr(interrupts, "_SIGTERMS", [])
    _interrupted_anyway(ConfigError("tracking URI x is unusable"))   # no signal: the error stands (returns)
    interrupts.note_sigterm(15)
    with pytest.raises(typer.Exit) as ended:
        _interrupted_anyway(ConfigError("tracking URI x is unusable"))
    assert ended.value.exit_code == 143


def test_processes_started_for_a_pool_inherit_a_blocked_sigint():
    """Loky's workers and the resource trackers start with SIGINT blocked, so a Ctrl-C to the process group that
    lands while one is still starting cannot print "Fatal Python error: init_import_site" and a traceback."""
    import multiprocessing.resource_tracker as mp_tracker
    import signal

    from joblib.externals.loky.backend import resource_tracker as loky_tracker
    from joblib.externals.loky.process_executor import ProcessPoolExecutor

    from mbi_predict.workers import _PATCHED, _with_sigint_blocked, start_workers_without_ctrl_c

    assert start_workers_without_ctrl_c()
    for owner, name in ((ProcessPoolExecutor, "_adjust_process_count"),
                        (loky_tracker.ResourceTracker, "ensure_running"),
                        (mp_tracker.ResourceTracker, "ensure_running")):
        assert getattr(getattr(owner, name), _PATCHED, False), (owner, name)

    class Starter:
        def start(self):
            return signal.pthread_sigmask(signal.SIG_BLOCK, [])

    assert _with_sigint_blocked(Starter, "start")
    assert signal.SIGINT in Starter().start()                          # blocked while it starts processes
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])   # and only then
