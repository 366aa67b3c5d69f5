import json
from html.parser import HTMLParser

import pytest

from mbi_predict.deploy import ModelLookupError
from mbi_predict.errors import ConfigError
from mbi_predict.report.card import build_card, validate_card, write_card


def test_card_numbers_are_the_runs_numbers(run_folder, run_summary):
    card = build_card(run_folder, model="elastic_net")
    pooled = {row["metric"]: row for row in card["evaluation"]["pooled"]}
    for metric, expected in run_summary["models"]["elastic_net"]["pooled"].items():
        for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "tau2"):
            assert pooled[metric][key] == expected[key], (metric, key)
    per_trial = {row["trial_id"]: row for row in card["evaluation"]["per_trial"]}
    for row in run_summary["models"]["elastic_net"]["per_trial"]:
        assert per_trial[row["trial_id"]]["rmse"] == row["rmse"]
        assert per_trial[row["trial_id"]]["n"] == row["n"]
    assert card["subgroups"]["rows"] == run_summary["models"]["elastic_net"]["subgroups"]
    assert card["training_data"]["n_participants"] == run_summary["data"]["n_participants"]
    assert card["training_data"]["countries"] == sorted({t["country"] for t in run_summary["data"]["trials"]})


def test_default_model_is_the_best_by_pooled_rmse_leaving_out_the_reference(run_folder, run_summary):
    # the reference comparator (estimator "reference") is a yardstick: never the default card, whatever its RMSE
    card = build_card(run_folder)
    assert card["model_details"]["name"] == "elastic_net"
    assert card["model_details"]["primary_metric"] == "rmse"
    assert "chosen automatically" in card["model_details"]["selection"]
    assert "reference comparator left out" in card["model_details"]["selection"]
    summary = json.loads((run_folder / "summary.json").read_text())
    summary["models"]["elastic_net"]["pooled"]["rmse"]["estimate"] = 1e9   # still chosen over the reference
    summary["models"]["extra"] = {**summary["models"]["elastic_net"], "estimator": "random_forest",
                                  "pooled": {"rmse": {"estimate": 0.5}}}
    (run_folder / "summary.json").write_text(json.dumps(summary))
    assert build_card(run_folder)["model_details"]["name"] == "extra"
    del summary["models"]["extra"], summary["models"]["elastic_net"]
    (run_folder / "summary.json").write_text(json.dumps(summary))
    assert build_card(run_folder)["model_details"]["name"] == "reference"   # the only prognostic model


def test_figures_are_the_models_own_plots(run_folder):
    card = build_card(run_folder, model="elastic_net")
    assert sorted(f["path"] for f in card["figures"]) == ["plots/calibration_elastic_net.png",
                                                          "plots/forest_elastic_net_rmse.png"]


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_html_is_self_contained(run_folder, tmp_path):
    card = build_card(run_folder, model="elastic_net")
    out = write_card(card, tmp_path / "card.html", fmt="html")
    parser = _Collector()
    parser.feed(out.read_text())
    assert len(parser.images) == 2
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert "table" in parser.tags and "h1" in parser.tags


def test_json_follows_the_schema_and_markdown_links_its_figures(run_folder, tmp_path):
    import jsonschema
    from importlib.resources import files

    card = build_card(run_folder)
    out = write_card(card, tmp_path / "card.json", fmt="json")
    schema = json.loads(files("mbi_predict.resources").joinpath("model_card.schema.json").read_text())
    jsonschema.validate(json.loads(out.read_text()), schema)
    md = write_card(card, tmp_path / "card.md").read_text()
    assert "## TRIPOD+AI checklist" in md and "| 12d |" in md
    for figure in card["figures"]:
        link = f"card_figures/{figure['path'].split('/')[-1]}"
        assert f"]({link})" in md and (tmp_path / link).is_file()


def test_schema_rejects_a_broken_card(run_folder, tmp_path):
    card = build_card(run_folder)
    card["tripod_ai"][0]["status"] = "done"
    with pytest.raises(ConfigError, match="tripod_ai/0/status"):
        write_card(card, tmp_path / "card.json", fmt="json")
    assert not (tmp_path / "card.json").exists()


def test_no_participant_row_in_the_card(run_folder, ipd, tmp_path):
    card = build_card(run_folder)
    text = "".join(write_card(card, tmp_path / f"card.{fmt}", fmt=fmt).read_text() for fmt in ("md", "json"))
    leaked = [pid for pid in ipd["participant_id"].astype(str) if pid in text]
    assert leaked == []


def test_missing_descriptives_degrade_gracefully(run_folder, tmp_path):
    summary = json.loads((run_folder / "summary.json").read_text())
    summary["data"] = {"sha256": "00", "n_participants": 10, "n_trials": 5}
    del summary["models"]["elastic_net"]["subgroups"]
    (run_folder / "summary.json").write_text(json.dumps(summary))
    card = build_card(run_folder, model="elastic_net")
    checklist = {row["item"]: row["status"] for row in card["tripod_ai"]}
    assert checklist["14"] == "not met" and checklist["12d"] == "met" and checklist["5a"] == "not met"
    md = write_card(card, tmp_path / "card.md").read_text()
    assert "Countries | not recorded in this run" in md
    assert "subgroup performance: not recorded in this run" in md
    assert any("Only 5 trials" in note for note in card["caveats_and_recommendations"])


def test_unknown_model_and_unknown_run_are_one_line_errors(run_folder, tmp_path):
    with pytest.raises(ModelLookupError, match="no model 'nope'.*elastic_net"):
        build_card(run_folder, model="nope")
    with pytest.raises(ModelLookupError, match="has no summary.json"):
        build_card(tmp_path)
    with pytest.raises(ModelLookupError, match="neither a run folder nor a run"):
        build_card("0123456789abcdef", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(ConfigError, match="unknown card format"):
        write_card(build_card(run_folder), tmp_path / "card.pdf", fmt="pdf")
