import json
import math

import numpy as np
import pytest

from mbi_predict.errors import DataError
from mbi_predict.io import atomic_path, to_json, write_json_atomic


def test_error_message_is_one_line_and_names_its_place():
    error = DataError("bad\nvalue", file="a.csv", trial="T1", column="age")
    assert str(error) == "file a.csv, trial T1, column age: bad value"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(target, {"x": np.float64(1.5), "y": math.nan, "z": np.arange(2)})
    assert json.loads(target.read_text()) == {"x": 1.5, "y": None, "z": [0, 1]}


def test_to_json_is_strict():
    assert to_json({"a": float("inf")}) == '{"a": null}'
