"""Cards that read like cards: sentences and tables, no dict dumps, captions as sentences, sensible numbers."""

from __future__ import annotations

import copy
import json
import re

from mbi_predict.report.card import build_card, write_card
from mbi_predict.report.card_render import hyperparameter_blocks


def test_captions_are_sentences(run_folder):
    card = build_card(run_folder, model="elastic_net")
    for figure in card["figures"]:
        assert figure["caption"].endswith(".") and " " in figure["caption"]
        assert figure["caption"] != figure["path"] and "_" not in figure["caption"].split(" of ")[0]
    captions = {f["path"]: f["caption"] for f in card["figures"]}
    assert captions["plots/calibration_elastic_net.png"].startswith("Calibration of elastic_net in the held-out")
    assert captions["plots/forest_elastic_net_rmse.png"].startswith("RMSE of elastic_net in each held-out trial")


def test_no_dict_dumps_and_no_unreadable_numbers(run_folder, run_summary, tmp_path):
    summary = copy.deepcopy(run_summary)
    summary["data"]["instruments"] = {"distress": ["K10", "GHQ-12"], "wellbeing": ["WEMWBS"]}
    summary["data"]["missingness"] = {"age": 0.0, "education": 0.0329}
    summary["data"]["standardisation"] = {"method": "within_trial", "rule": "z within trial"}
    summary["models"]["elastic_net"]["pooled"]["calibration_intercept"]["estimate"] = -1.96e-17
    (run_folder / "summary.json").write_text(json.dumps(summary))
    md = write_card(build_card(run_folder, model="elastic_net"), tmp_path / "card.md").read_text()
    assert not re.search(r"\w+: [^|;]+; \w+: ", md)            # no `name: ...; metric: ...` walls
    assert "e-17" not in md and "| calibration-in-the-large | 0 |" in md   # metric names in words
    assert "| distress | K10, GHQ-12 |" in md and "| education | 3.3% |" in md
    assert "Complete in every participant: age." in md
    assert "within-trial: z within trial" in md


def test_hyperparameter_table_shows_only_meaningful_rows():
    assert hyperparameter_blocks({"T1": {}, "T2": {}}) == [
        ("p", "No hyper-parameter was set or tuned: the estimator's defaults were used in every fold.")]
    blocks = hyperparameter_blocks({"T1": {"n_estimators": 100, "max_depth": 3, "eta": 0.05, "unused": None},
                                    "T2": {"n_estimators": 100, "max_depth": 4, "eta": 0.1, "unused": None},
                                    "T3": {}})
    rows = blocks[1][2]
    assert [row[0] for row in rows] == ["n estimators", "max depth", "eta"]
    assert rows[0][1:] == ["100", "the same in every fold"] and rows[1][1] == "3 to 4"
