"""Each reader on a real file of its format, written here with the format's own library."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from mbi_predict.data.readers import load_ipd, read_raw
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import DataError
from mbi_predict.io import sha256_file

FRAME = pd.DataFrame({"id": [1, 2, 3], "group": [1, 2, 1], "score": [10.0, np.nan, 7.0]})
LABELS = {"group": {1: "MBSR", 2: "wait list"}}


@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_spss_and_stata_value_labels_become_categories(tmp_path, fmt):
    path = tmp_path / f"trial.{fmt}"
    writer = pyreadstat.write_sav if fmt == "sav" else pyreadstat.write_dta
    writer(FRAME, str(path), variable_value_labels=LABELS)
    before = sha256_file(path)
    frame = read_raw(path)
    assert isinstance(frame["group"].dtype, pd.CategoricalDtype)
    assert frame["group"].astype(str).tolist() == ["MBSR", "wait list", "MBSR"]
    assert frame["score"].isna().tolist() == [False, True, False]
    assert sha256_file(path) == before  # input files are never modified


def test_csv_and_tsv_come_back_as_text_so_missing_codes_stay_visible(tmp_path):
    csv = tmp_path / "trial.csv"
    csv.write_text("id,group,score\n1,MBSR,-99\n2,waitlist, \n3,MBSR,NA\n", encoding="utf-8")
    frame = read_raw(csv)
    assert frame["score"].tolist() == ["-99", " ", "NA"]
    tsv = tmp_path / "trial.tsv"
    tsv.write_text("id\tgroup\n007\tMBSR\n", encoding="utf-8")
    assert read_raw(tsv)["id"].tolist() == ["007"]


def test_excel_and_parquet(tmp_path):
    xlsx = tmp_path / "trial.xlsx"
    FRAME.to_excel(xlsx, index=False, engine="openpyxl")
    frame = read_raw(xlsx)
    assert frame["id"].tolist() == [1, 2, 3] and np.isnan(frame["score"][1])
    parquet = tmp_path / "trial.parquet"
    FRAME.to_parquet(parquet)
    pd.testing.assert_frame_equal(read_raw(parquet), FRAME)


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = tmp_path / "export.txt"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    assert read_raw(path, format="csv").columns.tolist() == ["a", "b"]


@pytest.mark.parametrize("name", ["broken.sav", "broken.dta", "broken.xlsx", "broken.parquet"])
def test_unreadable_file_is_one_line_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a real file\x00\x01\x02" * 10)
    with pytest.raises(DataError) as info:
        read_raw(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "cannot read" in message


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_raw(tmp_path / "absent.csv")
    odd = tmp_path / "data.xyz"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_raw(odd)


def test_load_ipd_reads_parquet_and_csv_and_checks_the_contract(tmp_path):
    ipd = simulate_latent(n_trials=3, n=150, seed=5).ipd
    ipd.to_parquet(tmp_path / "ipd.parquet")
    ipd.to_csv(tmp_path / "ipd.csv", index=False)
    for name in ("ipd.parquet", "ipd.csv"):
        loaded = load_ipd(tmp_path / name)
        assert len(loaded) == len(ipd) and loaded["arm"].isin([0, 1]).all()
    ipd.drop(columns="arm").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as info:
        load_ipd(tmp_path / "bad.csv")
    assert str(tmp_path / "bad.csv") in str(info.value) and "column arm" in str(info.value)
