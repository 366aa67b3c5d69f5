"""The central test: simulate a consortium as raw files, harmonise it, and get exactly `simulate_ipd`'s table.

`simulate_ipd` computes the expected table from the simulated raw integers with its own arithmetic, so agreement
checks the whole harmoniser: readers of six formats, missing codes, value labels, recodes, reverse keying, prorating,
window assignment, both standardisations and the deterioration flags.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.harmonise import harmonise
from mbi_predict.data.publish import read_parquet_metadata, write_harmonised
from mbi_predict.data.rawsim import simulate_consortium_files, simulate_ipd
from mbi_predict.data.readers import load_ipd, read_raw
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.io import sha256_file


# 13 trials use all 13 trial profiles (every format, instrument mix and coding); fewer people keep the test fast.
# The full default consortium (2,371 participants) is checked in the slow test at the end.
SMALL = {"seed": 7, "n_trials": 13, "n": 900}


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return simulate_consortium_files(tmp_path_factory.mktemp("consortium"), **SMALL)


def assert_same_table(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert sorted(got.columns) == sorted(expected.columns)
    assert len(got) == len(expected)
    for column in expected.columns:
        a, b = got[column], expected[column]
        if pd.api.types.is_numeric_dtype(b.dtype) and pd.api.types.is_numeric_dtype(a.dtype):
            a, b = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=column)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=column)
        else:
            norm = lambda s: [None if pd.isna(v) else str(v) for v in s]  # noqa: E731
            assert norm(a) == norm(b), column


@pytest.mark.parametrize("method", ["within_trial", "norm"])
def test_simulate_then_harmonise_reproduces_simulate_ipd(consortium, method):
    result = harmonise(consortium, standardisation=method)
    expected, truth = simulate_ipd(standardisation=method, **SMALL)
    assert_same_table(result.ipd, expected)
    assert result.metadata["standardisation"] == method
    assert len(result.ipd) == SMALL["n"] and result.ipd["trial_id"].nunique() == 13
    # the truth table joins the harmonised table one to one
    assert set(zip(truth["trial_id"], truth["participant_id"])) == set(
        zip(result.ipd["trial_id"], result.ipd["participant_id"]))


@pytest.mark.slow
def test_the_default_consortium_round_trips_and_its_harmonisation_time(tmp_path):
    spec = simulate_consortium_files(tmp_path)
    for method in ("within_trial", "norm"):
        started = time.perf_counter()
        result = harmonise(spec, standardisation=method)
        elapsed = time.perf_counter() - started
        assert_same_table(result.ipd, simulate_ipd(standardisation=method)[0])
        assert len(result.ipd) == 2371
        print(f"harmonise({method}) of 13 trials / 2371 participants: {elapsed:.2f} s")


def test_the_raw_files_cover_six_formats_and_harmonised_scores_track_the_latent_truth(consortium):
    raw = sorted(p.suffix for p in (consortium.parent / "raw").iterdir())
    assert set(raw) == {".csv", ".tsv", ".sav", ".dta", ".xlsx", ".parquet"}
    # SPSS items carry value labels on their anchors (as real files do); scoring must use the codes underneath
    spss = read_raw(consortium.parent / "raw" / "T02.sav")
    assert isinstance(spss["HADSA_1_T0"].dtype, pd.CategoricalDtype) and "Not at all" in set(spss["HADSA_1_T0"])
    ipd = harmonise(consortium, standardisation="norm").ipd
    latent = simulate_latent(**SMALL).ipd
    # rounding to integers, clipping at floors and prorating blur the latent z, but not by much
    for column in ("baseline_distress", "baseline_wellbeing", "distress_fu1_6"):
        both = ipd[column].notna() & latent[column].notna()
        r = np.corrcoef(ipd.loc[both, column], latent.loc[both, column])[0, 1]
        assert r > 0.85, (column, r)
    # nobody dropped; outcome missingness is the simulator's, not added by harmonisation (items can add a little)
    assert ipd["distress_fu1_6"].isna().mean() == pytest.approx(latent["distress_fu1_6"].isna().mean(), abs=0.03)


def test_harmonising_leaves_the_raw_files_untouched(consortium):
    files = sorted((consortium.parent / "raw").iterdir())
    before = {p.name: sha256_file(p) for p in files}
    harmonise(consortium)
    assert {p.name: sha256_file(p) for p in files} == before


def test_simulated_files_are_deterministic(tmp_path):
    first = simulate_consortium_files(tmp_path / "a", seed=11, n_trials=6, n=400)
    second = simulate_consortium_files(tmp_path / "b", seed=11, n_trials=6, n=400)
    for path in sorted(first.parent.rglob("*")):
        if path.is_dir():
            continue
        twin = second.parent / path.relative_to(first.parent)
        if path.suffix in (".csv", ".tsv", ".yaml", ".json"):
            assert path.read_bytes() == twin.read_bytes(), path.name
        else:  # binary formats embed timestamps; their values must be identical
            pd.testing.assert_frame_equal(read_raw(path) if path.parent.name == "raw" else pd.read_parquet(path),
                                          read_raw(twin) if twin.parent.name == "raw" else pd.read_parquet(twin))
    other = simulate_consortium_files(tmp_path / "c", seed=12, n_trials=6, n=400)
    assert (other.parent / "raw" / "T01.csv").read_bytes() != (first.parent / "raw" / "T01.csv").read_bytes()
    scenario = json.loads((first.parent / "scenario.json").read_text())
    assert scenario["seed"] == 11 and scenario["n_participants"] == 400
    truth = pd.read_parquet(first.parent / "truth.parquet")
    assert "harmed_subgroup" in truth.columns and len(truth) == 400


def test_write_harmonised_outputs_metadata_and_a_report_without_participants(consortium, tmp_path):
    result = harmonise(consortium)
    written = write_harmonised(result, tmp_path / "out" / "ipd.parquet", report_dir=tmp_path / "report")
    names = {p.name for p in written}
    assert {"ipd.parquet", "ipd.meta.json", "ipd.missingness.csv", "harmonisation_report.md",
            "harmonisation_report.html"} == names
    loaded = load_ipd(tmp_path / "out" / "ipd.parquet")
    check_ipd(loaded)
    assert len(loaded) == len(result.ipd)
    embedded = read_parquet_metadata(tmp_path / "out" / "ipd.parquet")
    sidecar = json.loads((tmp_path / "out" / "ipd.meta.json").read_text())
    assert embedded == sidecar and sidecar["standardisation"] == "within_trial"
    assert sidecar["trials"]["T02"]["constructs"]["distress"]["timepoints"]["baseline"]["instrument"] == "K10"
    ids = set(result.ipd["participant_id"])
    for name in ("harmonisation_report.md", "harmonisation_report.html"):
        text = (tmp_path / "report" / name).read_text()
        assert "participant_id" not in text
        assert not any(f">{pid}<" in text or f"| {pid} |" in text for pid in ids)
        assert "T13" in text
    assert "data:image/png;base64," in (tmp_path / "report" / "harmonisation_report.html").read_text()
    missingness = pd.read_csv(tmp_path / "out" / "ipd.missingness.csv")
    assert "participant_id" not in set(missingness["variable"])


@pytest.mark.parametrize("scenario", ["null", "strong", "harm"])
def test_every_scenario_harmonises(tmp_path, scenario):
    spec = simulate_consortium_files(tmp_path, scenario=scenario, seed=3, n_trials=3, n=150)
    ipd = harmonise(spec).ipd
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert len(ipd) == len(truth) == 150
    assert (truth["harmed_subgroup"].sum() > 0) == (scenario == "harm")
