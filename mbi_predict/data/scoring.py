"""Scoring and standardisation as small pure functions on arrays.

Nothing here reads files or knows about trials: `harmonise` supplies the numbers and turns problems into one-line
errors that name the file, trial and column. Keeping the arithmetic here, isolated, is what lets property-based tests
pin it down (reverse keying is an involution, prorating equals the plain sum when nothing is missing, ...).

Conventions
- Totals are plain item sums after reverse keying (item_min + item_max - value).
- Prorating: a total is computed when at least `min_share` of the items are present, as the sum of the present items
  times n_items / n_present (the mean of the present items scaled to the full length); otherwise it is missing.
  Computed as sum * n / n_present so that a complete row gives exactly the plain sum.
- Standardisation: z = orientation * (raw - reference mean) / reference SD, where the reference is the trial's pooled
  baseline (both arms, SD with ddof=1) for `within_trial` or the instrument's published norm for `norm`, and
  orientation = -1 only when the instrument's direction disagrees with its construct's name.
- Reliable deterioration (Jacobson & Truax 1991): RCI = (follow-up - baseline) / S_diff with
  S_diff = sqrt(2) * SE and SE = SD * sqrt(1 - reliability). The SD follows the declared standardisation (the trial's
  pooled baseline SD for `within_trial`, the norm SD for `norm`), so the flag is consistent with the z-scores it sits
  beside. Deteriorated = RCI beyond 1.96 in the instrument's "worse" direction; missing if either score is missing.
"""

from __future__ import annotations

import math

import numpy as np

RCI_CRITICAL = 1.96


def reverse_key(values: np.ndarray, item_min: float, item_max: float) -> np.ndarray:
    """Mirror item responses within their range; applying it twice gives the input back."""
    return item_min + item_max - np.asarray(values, dtype=float)


def apply_reverse_keying(items: np.ndarray, reverse_items: tuple[int, ...] | list[int], item_min: float,
                         item_max: float) -> np.ndarray:
    """Items (participants x items) with the 1-based `reverse_items` columns mirrored."""
    scored = np.array(items, dtype=float, copy=True)
    for item in reverse_items:
        scored[:, item - 1] = reverse_key(scored[:, item - 1], item_min, item_max)
    return scored


def prorated_total(items: np.ndarray, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Row totals with prorating, and a boolean mask of rows that were prorated (some items missing, total kept)."""
    items = np.asarray(items, dtype=float)
    if items.ndim != 2 or items.shape[1] == 0:
        raise ValueError("items must be a 2-D array with at least one item column")
    n_items = items.shape[1]
    present = np.isfinite(items)
    n_present = present.sum(axis=1)
    sums = np.where(present, items, 0.0).sum(axis=1)
    enough = n_present >= math.ceil(min_share * n_items - 1e-9)
    enough &= n_present > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        totals = np.where(enough, sums * n_items / np.maximum(n_present, 1), np.nan)
    prorated = enough & (n_present < n_items)
    return totals, prorated


def out_of_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Mask of present values outside [low, high]."""
    values = np.asarray(values, dtype=float)
    return np.isfinite(values) & ((values < low) | (values > high))


def baseline_reference(baseline_raw: np.ndarray) -> tuple[float, float]:
    """The trial's pooled baseline mean and SD (ddof=1) over all randomised participants with a score."""
    values = np.asarray(baseline_raw, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        raise ValueError("fewer than two baseline scores: cannot estimate the trial's baseline SD")
    sd = float(np.std(values, ddof=1))
    if not sd > 0:
        raise ValueError("baseline scores do not vary: the trial's baseline SD is 0")
    return float(np.mean(values)), sd


def standardise(raw: np.ndarray, mean: float, sd: float, orientation: float = 1.0) -> np.ndarray:
    """z = orientation * (raw - mean) / sd; missing stays missing."""
    if not sd > 0:
        raise ValueError("the reference SD must be positive")
    return orientation * (np.asarray(raw, dtype=float) - mean) / sd


def reliable_change_index(baseline_raw: np.ndarray, followup_raw: np.ndarray, sd: float,
                          reliability: float) -> np.ndarray:
    """Jacobson-Truax RCI on the raw scale: (follow-up - baseline) / (sqrt(2) * sd * sqrt(1 - reliability))."""
    if not sd > 0 or not 0 < reliability < 1:
        raise ValueError("the RCI needs a positive SD and a reliability strictly between 0 and 1")
    s_diff = math.sqrt(2.0) * sd * math.sqrt(1.0 - reliability)
    return (np.asarray(followup_raw, dtype=float) - np.asarray(baseline_raw, dtype=float)) / s_diff


def reliable_deterioration(baseline_raw: np.ndarray, followup_raw: np.ndarray, sd: float, reliability: float,
                           higher_is_worse: bool, critical: float = RCI_CRITICAL) -> np.ndarray:
    """1.0 where change is reliably in the worse direction, 0.0 where not, NaN where either score is missing."""
    rci = reliable_change_index(baseline_raw, followup_raw, sd, reliability)
    worse = rci > critical if higher_is_worse else rci < -critical
    return np.where(np.isfinite(rci), worse.astype(float), np.nan)
