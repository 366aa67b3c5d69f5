"""The TRIPOD+AI 2024 checklist (Collins et al., BMJ 385:e078378) as a table pointing into the card.

Each item is met, not met, or not applicable, decided from what the card actually holds (so a run that did not
record subgroup metrics gets "not met" for fairness, not a tick). Items about the study as a whole (title,
abstract, ethics approval, funding, registration, patient involvement, interpretation) cannot be met by a model
card; they are "not met" with the note that the manuscript must report them, rather than silently dropped.
Cluster-specific wording follows TRIPOD-Cluster 2023 (heterogeneity across trials).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MANUSCRIPT = "outside the card: report in the manuscript"
Check = Callable[[dict[str, Any]], bool | None]  # True met, False not met, None not applicable


def _recorded(value: Any) -> bool:
    from mbi_predict.report.card_source import NOT_RECORDED

    return value not in (None, "", [], {}, NOT_RECORDED)


def _pooled(card: dict, key: str) -> bool:
    return any(_recorded(row.get(key)) for row in card["evaluation"]["pooled"])


def _binary_only(card: dict) -> bool | None:
    return None if card["model_details"]["outcome_task"] != "binary" else False


# (item, topic, card section, check); check None means the item is outside the card's reach
ITEMS: tuple[tuple[str, str, str, Check | None], ...] = (
    ("1", "Title", "", None),
    ("2", "Abstract", "", None),
    ("3a", "Healthcare context and rationale", "Intended use", lambda c: True),
    ("3b", "Target population and intended users", "Intended use", lambda c: bool(c["intended_use"]["primary_users"])),
    ("3c", "Known health inequalities", "Ethical considerations", lambda c: True),
    ("4", "Objectives (development and/or evaluation)", "Model details", lambda c: True),
    ("5a", "Data sources", "Training data", lambda c: _recorded(c["training_data"]["trials"])),
    ("5b", "Dates of accrual and follow-up", "", None),
    ("6a", "Setting, number and location of centres", "Training data",
     lambda c: _recorded(c["training_data"]["settings"]) and _recorded(c["training_data"]["countries"])),
    ("6b", "Eligibility criteria", "", None),
    ("6c", "Treatments received", "Training data", lambda c: _recorded(c["training_data"]["control_types"])),
    ("7", "Data preparation", "Training data", lambda c: _recorded(c["training_data"]["standardisation"])),
    ("8a", "Outcome definition and timing", "Model details", lambda c: _recorded(c["model_details"]["outcome"])),
    ("8b", "Qualifications of outcome assessors", "", None),
    ("8c", "Blinding of outcome assessment", "", None),
    ("9a", "Choice of initial predictors", "Model details", lambda c: bool(c["model_details"]["features"])),
    ("9b", "Definition of predictors", "Training data", lambda c: _recorded(c["training_data"]["instruments"])),
    ("9c", "Qualifications of predictor assessors", "", None),
    ("10", "Sample size", "Training data", lambda c: _recorded(c["training_data"]["n_participants"])),
    ("11", "Missing data", "Training data", lambda c: _recorded(c["training_data"]["missingness"])),
    ("12a", "How the data were used (development, evaluation)", "Evaluation",
     lambda c: _recorded(c["evaluation"]["scheme"])),
    ("12b", "Handling of predictors", "Model details", lambda c: _recorded(c["model_details"]["description"])),
    ("12c", "Model type, building steps, tuning, internal validation", "Model details; Evaluation",
     lambda c: _recorded(c["model_details"]["estimator"]) and _recorded(c["evaluation"]["scheme"])),
    ("12d", "Heterogeneity of performance across clusters (trials)", "Evaluation", lambda c: _pooled(c, "tau2")),
    ("12e", "Performance measures and rationale", "Evaluation",
     lambda c: bool(c["evaluation"]["metric_definitions"])),
    ("12f", "Model updating or recalibration", "Caveats and recommendations", lambda c: None),
    ("12g", "How predictions were calculated in evaluation", "Evaluation", lambda c: _recorded(
        c["evaluation"]["validation"].get("note"))),
    ("13", "Class imbalance", "Evaluation", _binary_only),
    ("14", "Fairness", "Performance in subgroups", lambda c: c["subgroups"]["rows"] is not None),
    ("15", "Model output", "Model details", lambda c: True),
    ("16", "Differences between development and evaluation data", "Evaluation",
     lambda c: bool(c["evaluation"]["per_trial"])),
    ("17", "Ethical approval", "", None),
    ("18a-f", "Funding, conflicts, protocol, registration, data and code sharing", "", None),
    ("19", "Patient and public involvement", "", None),
    ("20a", "Participant flow", "Evaluation", lambda c: bool(c["evaluation"]["per_trial"])),
    ("20b", "Participant characteristics per data source", "Training data",
     lambda c: _recorded(c["training_data"]["trials"])),
    ("20c", "Comparison of development and evaluation data", "Training data",
     lambda c: _recorded(c["training_data"]["trials"])),
    ("21", "Participants and outcome events in each analysis", "Evaluation",
     lambda c: bool(c["evaluation"]["per_trial"]) and all("n" in row for row in c["evaluation"]["per_trial"])),
    ("22", "Full model specification and access", "Model details",
     lambda c: _recorded(c["model_details"]["final_model_uri"])),
    ("23a", "Performance with confidence intervals, incl. subgroups", "Evaluation; Performance in subgroups",
     lambda c: _pooled(c, "ci_low") and c["subgroups"]["rows"] is not None),
    ("23b", "Heterogeneity of performance across clusters", "Evaluation",
     lambda c: _pooled(c, "tau2") and _pooled(c, "pi_low")),
    ("24", "Model updating results", "", lambda c: None),
    ("25", "Interpretation", "", None),
    ("26", "Limitations", "Caveats and recommendations", lambda c: bool(c["caveats_and_recommendations"])),
    ("27a", "Handling of poor-quality or unavailable input data", "Caveats and recommendations", lambda c: True),
    ("27b", "User interaction and expertise required", "Intended use", lambda c: True),
    ("27c", "Future research", "Intended use", lambda c: True),
)


def tripod_checklist(card: dict[str, Any]) -> list[dict[str, str]]:
    """[{item, topic, status, section, note}] for every TRIPOD+AI item, decided from the card's content."""
    rows = []
    for item, topic, section, check in ITEMS:
        if check is None:
            rows.append({"item": item, "topic": topic, "status": "not met", "section": "", "note": MANUSCRIPT})
            continue
        outcome = check(card)
        if outcome is None:
            status, note = "not applicable", ("no updating was done in this run" if item in ("12f", "24")
                                              else "continuous outcome")
        elif outcome:
            status, note = "met", ""
        else:
            status, note = "not met", "not recorded in this run"
        rows.append({"item": item, "topic": topic, "status": status,
                     "section": section if status == "met" else "", "note": note})
    return rows
