"""Class 1, data loss: an output path that names an input (any spelling, symlink or hard link) is refused before
anything is written; the input is byte-identical afterwards."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from hardening_helpers import invoke, one_line_error, tree_hashes
from mbi_predict.errors import DataError


def test_check_outputs_apart_sees_through_spellings_symlinks_and_hard_links(tmp_path):
    from mbi_predict.io import check_outputs_apart
    source = tmp_path / "raw" / "T01.csv"
    source.parent.mkdir()
    source.write_text("a\n1\n")
    (tmp_path / "link.csv").symlink_to(source)
    os.link(source, tmp_path / "hard.csv")
    for spelling in (source, tmp_path / "raw" / ".." / "raw" / "T01.csv", tmp_path / "link.csv",
                     tmp_path / "hard.csv"):
        with pytest.raises(DataError, match="would overwrite an input"):
            check_outputs_apart([tmp_path / "ok.parquet", spelling], [source])
    check_outputs_apart([tmp_path / "ok.parquet", tmp_path / "new" / "T01.csv"], [source, None])


@pytest.mark.parametrize("target", ["raw/T01.csv", "raw/../raw/T01.csv", "consortium.csv", "hard.csv"])
def test_harmonise_refuses_to_overwrite_a_raw_file(consortium, target):
    (consortium / "consortium.csv").symlink_to(consortium / "raw" / "T01.csv")
    os.link(consortium / "raw" / "T01.csv", consortium / "hard.csv")
    before = tree_hashes(consortium)
    listing = sorted(p.name for p in consortium.rglob("*"))
    one_line_error(invoke("harmonise", consortium / "consortium.yaml", "--out", consortium / target),
                   "would overwrite an input")
    assert tree_hashes(consortium) == before
    assert sorted(p.name for p in consortium.rglob("*")) == listing


def test_predict_refuses_out_equal_to_data(tmp_path):
    data = tmp_path / "new.csv"
    pd.DataFrame({"participant_id": ["a"], "age": [30.0]}).to_csv(data, index=False)
    before = data.read_bytes()
    one_line_error(invoke("predict", "--model", tmp_path / "no_model", "--data", data, "--out", data),
                   "would overwrite an input")
    assert data.read_bytes() == before


def test_meta_and_card_refuse_to_overwrite_their_input(tmp_path):
    ipd = tmp_path / "ipd.parquet"
    ipd.write_bytes(b"not really parquet")
    one_line_error(invoke("meta", ipd, "--outcome", "distress_post", "--out", ipd), str(ipd))
    assert ipd.read_bytes() == b"not really parquet"
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"models": {}}))
    one_line_error(invoke("card", run, "--format", "json", "--out", run / "summary.json"),
                   "would overwrite an input")
    assert json.loads((run / "summary.json").read_text()) == {"models": {}}


def test_run_refuses_an_out_that_is_its_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("experiment: x\ndata: {simulate: {n_trials: 3, n: 300}}\noutcome: distress_fu1_6\n"
                      "models: [{name: reference, estimator: reference}]\n")
    before = config.read_bytes()
    one_line_error(invoke("run", config, "--out", config), str(config))
    assert config.read_bytes() == before


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_folder_outputs_that_are_files_are_refused(tmp_path, command):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    one_line_error(invoke(command, "--out", target), "must name a folder")
    assert target.read_text() == "keep me"
