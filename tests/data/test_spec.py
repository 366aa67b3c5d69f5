"""Consortium spec validation: one-line errors naming file, trial and key; the window rule and its boundaries."""

from __future__ import annotations

import copy

import pytest
import yaml

from mbi_predict.data.spec import Windows, label_key, load_spec, spec_from_dict
from mbi_predict.errors import SpecError

TRIAL = {
    "file": "t03.csv",
    "missing_codes": [-99, "NA", " "],
    "columns": {"participant_id": "pid", "arm": "grp", "gender": "sex"},
    "arms": {"MBSR": "mbi", "waitlist": "passive", 3: "active"},
    "recodes": {"gender": {"F": "female", "M": "male", 1: "female"}},
    "followups": {"post": 0, "w12": 12, "m12": 52},
    "instruments": {
        "depression": {"baseline": {"instrument": "PHQ-9", "items": "phq_{i}_t0"},
                       "w12": {"instrument": "PHQ-9", "total": "phq_w12"}},
    },
    "traits": {"mbi_type": "MBSR", "n_sessions": 8, "delivery": "group_in_person", "setting": "university",
               "country": "UK"},
}


def spec_dict(**trial_changes):
    trial = copy.deepcopy(TRIAL)
    trial.update(trial_changes)
    return {"name": "test", "trials": {"T03": trial}}


def error_of(data, source="consortium.yaml") -> str:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, source=source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_valid_spec_loads_with_defaults_and_normalised_labels():
    spec = spec_from_dict(spec_dict())
    trial = spec.trials["T03"]
    assert spec.standardisation == "within_trial" and spec.out_of_range == "error"
    assert spec.prorate_min_share == 0.8
    assert trial.arms == {"MBSR": "mbi", "waitlist": "passive", "3": "active"}
    assert trial.recodes["gender"]["1"] == "female"
    assert trial.missing_labels() == {"-99", "NA", ""}
    assert spec.followup_windows("T03") == {"post": "post", "w12": "fu1_6", "m12": "fu6plus"}
    assert trial.file_format() == "csv"


def test_unknown_instrument_names_file_trial_and_key():
    trial = copy.deepcopy(TRIAL)
    trial["instruments"]["depression"]["w12"]["instrument"] = "PHQ10"
    message = error_of({"trials": {"T03": trial}})
    assert message == ("file consortium.yaml, trial T03: key instruments.depression.w12.instrument: "
                       "unknown instrument 'PHQ10'")


def test_extra_keys_are_forbidden():
    message = error_of(spec_dict(colums={"a": "b"}))
    assert message.startswith("file consortium.yaml, trial T03: key colums:") and "Extra inputs" in message
    assert "key standardise" in error_of({**spec_dict(), "standardise": "norm"})


def test_bad_values_name_their_key():
    assert "key arms.MBSR" in error_of(spec_dict(arms={"MBSR": "treatment", "waitlist": "passive"}))
    assert "key traits.delivery" in error_of(spec_dict(traits={**TRIAL["traits"], "delivery": "by post"}))
    assert "key standardisation" in error_of({**spec_dict(), "standardisation": "z"})


def test_cross_key_checks():
    assert "key columns.arm: required mapping is missing" in error_of(spec_dict(columns={"participant_id": "pid"}))
    assert "needs an `mbi` arm" in error_of(spec_dict(arms={"MBSR": "mbi"}))
    trial = copy.deepcopy(TRIAL)
    trial["instruments"]["depression"]["w26"] = {"instrument": "PHQ-9", "total": "x"}
    assert "key instruments.depression.w26: time point is neither" in error_of({"trials": {"T03": trial}})
    trial = copy.deepcopy(TRIAL)
    trial["instruments"]["anxiety"] = {"baseline": {"instrument": "PHQ-9", "total": "x"}}
    assert "PHQ-9 measures depression, not anxiety" in error_of({"trials": {"T03": trial}})
    trial = copy.deepcopy(TRIAL)
    trial["instruments"]["depression"]["baseline"] = {"instrument": "PHQ-9", "items": ["a", "b"]}
    assert "PHQ-9 has 9 items, 2 columns given" in error_of({"trials": {"T03": trial}})


def test_within_trial_needs_a_baseline_on_the_same_instrument_but_norm_does_not():
    trial = copy.deepcopy(TRIAL)
    trial["instruments"]["depression"]["w12"] = {"instrument": "BDI-II", "total": "bdi_w12"}
    assert "within_trial standardisation needs a baseline on BDI-II" in error_of({"trials": {"T03": trial}})
    spec = spec_from_dict({"standardisation": "norm", "trials": {"T03": trial}})
    assert spec.trials["T03"].instruments["depression"]["w12"].instrument == "BDI-II"


def test_two_follow_ups_in_one_window_are_rejected():
    message = error_of(spec_dict(followups={"w8": 8, "w12": 12}))
    assert "trial T03: key followups.w12: falls in window fu1_6 like follow-up 'w8'" in message


def test_malformed_yaml_gives_file_and_line(tmp_path):
    path = tmp_path / "consortium.yaml"
    path.write_text("name: x\ntrials:\n  T01:\n    file: a.csv\n   columns: [oops\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"file {path}: malformed YAML at line 5") and "\n" not in message


def test_spec_file_round_trip_resolves_paths_relative_to_the_spec(tmp_path):
    path = tmp_path / "consortium.yaml"
    path.write_text(yaml.safe_dump(spec_dict()), encoding="utf-8")
    spec = load_spec(path)
    assert spec.trial_file("T03") == tmp_path / "t03.csv" and spec.source == str(path)


@pytest.mark.parametrize("weeks, window", [(0, "post"), (4, "post"), (4.01, "fu1_6"), (26, "fu1_6"),
                                           (26.01, "fu6plus"), (52, "fu6plus")])
def test_window_boundaries(weeks, window):
    assert Windows().assign(weeks) == window


def test_window_rule_is_configurable_and_rejects_negative_weeks():
    rule = Windows(post_max_weeks=2, fu1_6_max_weeks=12)
    assert [rule.assign(w) for w in (2, 3, 12, 13)] == ["post", "fu1_6", "fu1_6", "fu6plus"]
    with pytest.raises(ValueError):
        Windows().assign(-1)
    assert "must be 0 or more weeks" in error_of(spec_dict(followups={"mid": -2}))
    assert "key windows" in error_of({**spec_dict(), "windows": {"post_max_weeks": 30, "fu1_6_max_weeks": 26}})


def test_label_key_makes_codes_from_every_format_agree():
    assert label_key(1) == label_key(1.0) == label_key("1") == label_key(" 1.0 ") == "1"
    assert label_key(-99) == label_key("-99") == "-99"
    assert label_key("MBSR ") == "MBSR" and label_key(2.5) == "2.5"


def test_a_spec_can_extend_the_registry_with_its_own_instrument(tmp_path):
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"CESD-10": {
        "construct": "depression", "items": 10, "item_min": 0, "item_max": 3, "higher_is_worse": True,
        "reverse_items": [5, 8], "reliability": 0.86, "reliability_source": "test", "norm_mean": 7.0,
        "norm_sd": 5.0, "norm_source": "test"}}), encoding="utf-8")
    trial = copy.deepcopy(TRIAL)
    trial["instruments"]["depression"] = {"baseline": {"instrument": "CESD-10", "total": "cesd0"}}
    (tmp_path / "consortium.yaml").write_text(yaml.safe_dump({"registry": "extra.yaml", "trials": {"T03": trial}}),
                                              encoding="utf-8")
    spec = load_spec(tmp_path / "consortium.yaml")
    assert spec.instruments["CESD-10"].total_max == 30 and "PHQ-9" in spec.instruments
    (tmp_path / "extra.yaml").write_text("CESD-10:\n  construct: sadness\n", encoding="utf-8")
    with pytest.raises(SpecError, match="instrument CESD-10"):
        load_spec(tmp_path / "consortium.yaml")
