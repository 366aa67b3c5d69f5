"""The SHAP ranking beside the classical answer, and the records that go into summary.json.

Why side by side: a within-trial interaction (``mbi_predict.meta.interactions``) asks "does the MBI-vs-control
difference change with x, comparing people randomised in the same trial?" with a CI and a p-value; a CATE model's
SHAP ranking asks "which covariates move the model's predicted benefit?". Agreement is reassuring; a covariate that
ranks high for SHAP with a null interaction (or the reverse) is exactly what a reader should look at.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import ConfigError

_TERM = re.compile(r"^(?P<variable>.+?)\[(?P<level>.*)\]$")
RANKING_KEYS = ("feature", "importance", "ci_low", "ci_high", "null_p", "top_k_frequency", "beats_null",
                "null_status")


def interaction_variable(record: dict[str, Any]) -> str:
    """The covariate of an interaction record: its ``variable`` key, else the name before ``[level]``."""
    if record.get("variable"):
        return str(record["variable"])
    term = str(record["modifier"])
    match = _TERM.match(term)
    return match.group("variable") if match else term


def side_by_side(ranking: pd.DataFrame, interactions: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per covariate term: the SHAP ranking (importance, CI, ranks, null test if present) and the pooled
    within-trial interaction (estimate, CI, p) of the same covariate.

    A categorical covariate with several levels (``gender[male]``, ``gender[other]``) gets one row per level, its
    SHAP columns repeated (SHAP sums a covariate's levels). Covariates with no interaction have NaN there; terms
    whose covariate is not in the ranking are appended with NaN SHAP columns. Sorted by SHAP rank.
    """
    if "feature" not in ranking.columns:
        raise ConfigError("ranking needs a 'feature' column (the output of stability or a NullReference frame)")
    shap_columns = [c for c in ("feature", "importance", "ci_low", "ci_high", "rank_median", "top_k_frequency",
                                "null_p", "beats_null") if c in ranking.columns]
    shap_part = ranking[shap_columns].rename(columns={c: f"shap_{c}" for c in shap_columns if c != "feature"})
    shap_part = shap_part.assign(shap_rank=np.arange(1, len(shap_part) + 1))
    rows = [{"feature": interaction_variable(r), "interaction_term": str(r.get("modifier")),
             "interaction_estimate": r.get("estimate", math.nan), "interaction_ci_low": r.get("ci_low", math.nan),
             "interaction_ci_high": r.get("ci_high", math.nan), "interaction_pvalue": r.get("pvalue", math.nan),
             "interaction_k": r.get("k", math.nan),
             "across_trial_estimate": r.get("across_trial_estimate", math.nan)} for r in interactions]
    inter_part = pd.DataFrame(rows, columns=["feature", "interaction_term", "interaction_estimate",
                                             "interaction_ci_low", "interaction_ci_high", "interaction_pvalue",
                                             "interaction_k", "across_trial_estimate"])
    merged = shap_part.merge(inter_part, on="feature", how="outer", sort=False)
    merged["shap_rank"] = merged["shap_rank"].astype(float)
    return merged.sort_values(["shap_rank", "interaction_term"], na_position="last",
                              kind="stable").reset_index(drop=True)


def _clean(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def ranking_records(stability_df: pd.DataFrame, null_ref=None) -> list[dict[str, Any]]:
    """``[{"feature", "importance", "ci_low", "ci_high", "null_p", "top_k_frequency", "beats_null", "null_status"}]``
    sorted by importance (descending), JSON-safe (NaN -> None), for summary.json's ``"shap": {"ranking": [...]}``.

    ``null_p`` is the p-value of the null test (``NullReference.decision_p``: family-wise adjusted by default).
    ``beats_null`` is True/False only when the test was made; it is None (rendered "–") when it was not: no null
    reference, or B too small to reach alpha (``NullReference.test_status == "not_tested"``). ``null_status`` says
    which: "tested", "not_tested" or "no_null".
    """
    missing = [c for c in ("feature", "importance", "ci_low", "ci_high", "top_k_frequency")
               if c not in stability_df.columns]
    if missing:
        raise ConfigError(f"stability table lacks column(s) {missing}")
    decision_p = null_ref.decision_p if null_ref is not None else {}
    beats = null_ref.beats_null if null_ref is not None else {}
    status = "no_null" if null_ref is None else getattr(null_ref, "test_status", "tested")

    def verdict(feature: str):
        value = beats.get(feature)
        return None if value is None or status != "tested" else bool(value)

    records = [{"feature": str(row.feature), "importance": _clean(row.importance), "ci_low": _clean(row.ci_low),
                "ci_high": _clean(row.ci_high), "null_p": _clean(decision_p.get(str(row.feature))),
                "top_k_frequency": _clean(row.top_k_frequency), "beats_null": verdict(str(row.feature)),
                "null_status": status if str(row.feature) in beats or null_ref is None else "no_null"}
               for row in stability_df.itertuples(index=False)]
    return sorted(records, key=lambda r: (r["importance"] is None, -(r["importance"] or 0.0)))
