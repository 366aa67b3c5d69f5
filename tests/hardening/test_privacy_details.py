"""Class 7, privacy details: the deployed envelope stores no participant's exact extreme; the harmonisation report
suppresses distributions of tiny cells and escapes names; outputs follow the user's umask, not 0600."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.missingness import missingness_table
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.deploy import envelope_from_training


def test_envelope_bounds_are_rounded_outward_and_are_nobodys_value():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"age": np.round(rng.normal(40, 12, 300), 1), "score": rng.normal(0, 1, 300),
                          "flag": rng.integers(0, 2, 300).astype(float), "gender": rng.choice(["f", "m"], 300)})
    envelope = envelope_from_training(frame)
    for column in ("age", "score", "flag"):
        bounds = envelope["numeric"][column]
        values = frame[column].to_numpy()
        assert bounds["min"] < values.min() and bounds["max"] > values.max()
        assert bounds["min"] not in set(values) and bounds["max"] not in set(values)
    assert envelope["numeric"]["age"]["max"] - frame["age"].max() <= (frame["age"].max() - frame["age"].min()) / 10
    coarse = envelope_from_training(frame, grid=4)["numeric"]["age"]
    assert coarse["min"] <= envelope["numeric"]["age"]["min"] and coarse["max"] >= envelope["numeric"]["age"]["max"]
    assert envelope["categorical"]["gender"] == ["f", "m"]


@pytest.fixture(scope="module")
def small_trial_ipd():
    ipd = check_ipd(simulate_latent("galante2023", seed=3, n_trials=3, n=300).ipd)
    tiny = ipd[ipd["trial_id"] == ipd["trial_id"].iloc[0]].groupby("arm").head(2).copy()
    tiny["trial_id"] = "<script>alert(1)</script>"
    return pd.concat([ipd, tiny], ignore_index=True)


def test_report_suppresses_distributions_of_small_cells_and_escapes_names(small_trial_ipd):
    from mbi_predict.data.report import render_report
    metadata = {"consortium": "<b>x</b>", "n_participants": len(small_trial_ipd), "n_trials": 4, "trials": {}}
    pages = render_report(small_trial_ipd, metadata, missingness_table(small_trial_ipd))
    markdown, page = pages["harmonisation_report.md"], pages["harmonisation_report.html"]
    assert "<script>" not in markdown and "<script>" not in page and "<b>x</b>" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| baseline_distress") and "script" in line]
    assert rows and all("suppressed (n &lt; 10)" in row for row in rows)
    assert "distributions of fewer than 10 participants are suppressed" in markdown
    relaxed = render_report(small_trial_ipd, {**metadata, "min_cell_size": 3},
                            missingness_table(small_trial_ipd))["harmonisation_report.md"]
    assert "suppressed" not in relaxed.split("## Baseline scores", 1)[1]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_atomic_outputs_follow_the_umask(tmp_path, mask):
    from mbi_predict.io import output_set, write_text_atomic
    previous = os.umask(mask)
    try:
        single = write_text_atomic(tmp_path / "one.txt", "x")
        with output_set([tmp_path / "a.json", tmp_path / "sub" / "b.csv"]) as temps:
            for tmp in temps:
                tmp.write_text("y")
    finally:
        os.umask(previous)
    for path in (single, tmp_path / "a.json", tmp_path / "sub" / "b.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_report_shows_no_coverage_or_missingness_shares_of_a_tiny_trial(small_trial_ipd):
    """A trial of 4: '75% measured' or '50% missing' would say how many of four people answered."""
    from mbi_predict.data.report import report_tables
    tables = report_tables(small_trial_ipd, {"trials": {}}, missingness_table(small_trial_ipd))
    tiny = "<script>alert(1)</script>"
    coverage = tables["Covariate coverage (% non-missing)"]
    assert coverage.loc[coverage["trial_id"] == tiny].drop(columns="trial_id").isna().all(axis=None)
    assert coverage.loc[coverage["trial_id"] != tiny].drop(columns="trial_id").notna().any(axis=None)
    missing = tables["Missingness of outcomes (% missing, MBI / control)"]
    cells = missing.loc[missing["trial_id"] == tiny].drop(columns="trial_id").to_numpy().ravel()
    assert len(cells) and all(str(c).startswith("suppressed") for c in cells)
    others = missing.loc[missing["trial_id"] != tiny].drop(columns="trial_id").to_numpy().ravel()
    assert not any(str(c).startswith("suppressed") for c in others)
