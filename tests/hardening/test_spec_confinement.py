"""Class 2, files outside the spec's folder: `file:` and `registry:` must stay inside the spec's folder (no `..`,
no absolute path, no symlink out), and the error never echoes the foreign file's content."""

from __future__ import annotations

import os
import re

import pytest

from hardening_helpers import invoke, one_line_error
from mbi_predict.data.spec import load_spec
from mbi_predict.errors import SpecError

SECRET = "root:x:0:0:SECRET-FIRST-LINE"


@pytest.fixture
def foreign(tmp_path):
    path = tmp_path / "elsewhere" / "secret.csv"
    path.parent.mkdir()
    path.write_text(f"{SECRET}\nmore,private,lines\n")
    return path


def _point(consortium, key_line: str, replacement: str) -> None:
    spec = consortium / "consortium.yaml"
    text = spec.read_text()
    assert key_line in text
    spec.write_text(text.replace(key_line, replacement, 1))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked_folder"])
def test_trial_file_outside_the_folder_is_refused_without_echo(consortium, foreign, how):
    if how == "dotdot":
        target = os.path.relpath(foreign, consortium)
    elif how == "absolute":
        target = str(foreign)
    elif how == "symlink":
        (consortium / "raw" / "innocent.csv").symlink_to(foreign)
        target = "raw/innocent.csv"
    else:
        (consortium / "data").symlink_to(foreign.parent)
        target = "data/secret.csv"
    _point(consortium, "file: raw/T01.csv", f"file: {target}")
    with pytest.raises(SpecError, match=r"trial T01: key file: .*inside the spec's folder|absolute") as excinfo:
        load_spec(consortium / "consortium.yaml")
    assert "SECRET" not in str(excinfo.value)
    line = one_line_error(invoke("harmonise", consortium / "consortium.yaml", "--out", consortium / "ipd.parquet"),
                          "key file")
    assert "SECRET" not in line and not (consortium / "ipd.parquet").exists()


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_registry_outside_the_folder_is_refused(consortium, foreign, how):
    registry = foreign.with_suffix(".yaml")
    registry.write_text(f"{SECRET}: [unclosed\n")
    target = os.path.relpath(registry, consortium) if how == "dotdot" else str(registry)
    spec = consortium / "consortium.yaml"
    spec.write_text(re.sub(r"^trials:", f"registry: {target}\ntrials:", spec.read_text(), count=1, flags=re.M))
    line = one_line_error(invoke("harmonise", spec, "--out", consortium / "ipd.parquet"), "key registry")
    assert "SECRET" not in line


def test_a_file_inside_the_folder_through_a_harmless_dotdot_is_fine(consortium):
    _point(consortium, "file: raw/T01.csv", "file: raw/../raw/T01.csv")
    path = load_spec(consortium / "consortium.yaml").trial_file("T01")
    assert path.resolve() == (consortium / "raw" / "T01.csv").resolve()
