"""Numbers as people read them: three significant digits, no `-1.96e-17`, p-values as `< 0.001`.

Used by every renderer (cards, the study report, the terminal) and by the figures of the science layers
(`meta.plots`, `explain.plots`); the JSON outputs keep the exact values. It sits in the base layer, beside
`figstyle`, because plots below `report` need the same formats and may not import `report` (the layers point down).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["METRIC_LABELS", "ZERO", "estimate_ci", "interval", "label", "number", "p_value", "percent", "sentence"]

#: below this magnitude a number is printed as 0 (floating-point dust, e.g. a mean of standardised scores)
ZERO = 5e-10


def number(value: Any, digits: int = 3) -> str:
    """A readable number: ``digits`` significant digits, plain notation from 1e-4 to 1e6, integers as integers."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if abs(x) < ZERO:
        return "0"
    if abs(x) >= 1e6 or abs(x) < 1e-4:
        mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
        return f"{mantissa}×10^{int(exponent)}"
    if float(x).is_integer() and abs(x) >= 10 ** (digits - 1):
        return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))
    text = f"{x:.{digits}g}"
    if "e" in text:  # .3g turns 12345.6 into 1.23e+04: print the rounded integer instead
        return f"{round(x):,}"
    return text


def p_value(value: Any) -> str:
    """p-values: two significant digits, ``< 0.001`` below that, ``–`` when missing."""
    if value is None or isinstance(value, bool):
        return "–"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "–"
    if x < 0.001:
        return "< 0.001"
    return f"{x:.2g}" if x < 0.1 else f"{x:.2f}"


def p_text(value: Any) -> str:
    """``p = 0.03``, ``p < 0.001`` or ``p = –``: a p-value with its relation sign, for running text."""
    text = p_value(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def interval(low: Any, high: Any, digits: int = 3) -> str:
    """``low to high``; ``–`` when either end is missing."""
    if low is None or high is None or _nan(low) or _nan(high):
        return "–"
    return f"{number(low, digits)} to {number(high, digits)}"


def estimate_ci(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    """``est (low to high)``, or just ``est`` without an interval."""
    if value is None or _nan(value):
        return "–"
    bounds = interval(low, high, digits)
    return number(value, digits) if bounds == "–" else f"{number(value, digits)} ({bounds})"


def percent(value: Any, digits: int = 0) -> str:
    """A share (0-1) as a percentage."""
    if value is None or _nan(value):
        return "–"
    return f"{100 * float(value):.{digits}f}%"


def _nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def sentence(text: str) -> str:
    """First letter upper case, the rest untouched (``RMSE`` stays ``RMSE``)."""
    return text[:1].upper() + text[1:]


def label(name: str) -> str:
    """A metric or column name as words: ``benefit_calibration_slope`` -> ``benefit calibration slope``."""
    return METRIC_LABELS.get(name, str(name).replace("_", " "))


METRIC_LABELS = {
    "interaction_p_holm": "interaction, Holm-adjusted p",
    "rmse": "RMSE", "mae": "MAE", "r2": "R²", "c_statistic": "c-statistic", "brier": "Brier score",
    "oe_ratio": "O:E ratio", "ici": "ICI", "calibration_slope": "calibration slope",
    "calibration_intercept": "calibration-in-the-large", "benefit_calibration_slope": "benefit-calibration slope",
    "c_for_benefit": "c-for-benefit", "rate_autoc": "RATE (AUTOC)", "rate_qini": "RATE (Qini)",
    "ate": "average effect", "pehe": "PEHE", "cate_truth_corr": "correlation with the true effect",
    "dr_loss_vs_constant": "DR loss vs one average effect", "share_predicted_harmed": "share predicted harmed",
    "observed_effect_predicted_harmed": "observed effect in the predicted-harmed",
    "policy_value_vs_all": "policy value vs offering all", "policy_value_vs_none": "policy value vs offering none",
    "gates_top_minus_bottom": "GATES top minus bottom",
}
