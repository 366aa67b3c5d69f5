"""`run_meta`: the whole classical analysis of one outcome, shaped as the CLI's JSON; `meta.plots.write_meta_plots`
draws it (forest and funnel plots, in the figure format and resolution asked for)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mbi_predict.meta.bias import EggerResult, egger_test, leave_one_out
from mbi_predict.meta.interactions import interactions as estimate_interactions
from mbi_predict.meta.ipd import TwoStageResult, two_stage


@dataclass(frozen=True)
class MetaReport:
    outcome: str
    control: str
    two_stage: TwoStageResult
    interactions: list[dict[str, Any]]
    egger: EggerResult
    leave_one_out: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from mbi_predict.io import json_safe

        ts = self.two_stage
        per_trial = [{key: row.get(key) for key in ("trial_id", "n", "n_mbi", "n_control", "estimate", "se",
                                                     "ci_low", "ci_high", "weight", "fmi")}
                     | {key: row[key] for key in ("continuity_correction", "risk_difference", "risk_difference_se",
                                                  "adjusted_for", "note") if key in row}
                     for row in ts.per_trial]
        interactions = [{key: value for key, value in item.items() if key != "trials"} for item in self.interactions]
        return json_safe({
            "outcome": self.outcome, "control": self.control, "outcome_type": ts.outcome_type,
            "measure": ts.measure, "m": ts.m, "seed": ts.seed,
            "pooled": ts.pooled.to_dict() if ts.pooled else None,
            "secondary": {name: res.to_dict() for name, res in ts.secondary.items()},
            "per_trial": per_trial, "interactions": interactions, "egger": self.egger.to_dict(),
            "leave_one_out": self.leave_one_out, "skipped": ts.skipped, "notes": ts.notes + self.notes})

    def summary(self) -> str:
        ts = self.two_stage
        lines = [f"{self.outcome}: MBI vs {self.control} control, {ts.measure}"]
        lines.append(ts.pooled.summary() if ts.pooled else "No pooled estimate.")
        lines += [f"Note: {note}" for note in ts.notes + self.notes]
        lines += [f"Skipped {s['trial_id']}: {s['reason']}" for s in ts.skipped]
        lines.append("Egger test: " + (f"intercept {self.egger.intercept:.3f}, p = {self.egger.pvalue:.4f}"
                                       if self.egger.done else f"not done ({self.egger.reason})"))
        for item in self.interactions:
            lines.append(f"Interaction {item['modifier']}: {item['estimate']:.3f} "
                         f"({item['ci_low']:.3f} to {item['ci_high']:.3f}), k = {item['k']}; across trials "
                         f"{item['across_trial_estimate']:.3f}")
        return "\n".join(lines)


def run_meta(ipd: pd.DataFrame, outcome: str, *, control: str = "passive", modifiers: list[str] | None = None,
             m: int = 5, seed: int = 0, method: str = "REML", test: str = "z", level: float = 0.95,
             covariate_adjust: bool = True) -> MetaReport:
    """Two-stage pooling, within-trial interactions, Egger's test and leave-one-out for one outcome."""
    result = two_stage(ipd, outcome, control=control, m=m, seed=seed, covariate_adjust=covariate_adjust,
                       method=method, test=test, level=level)
    notes: list[str] = []
    found: list[dict[str, Any]] = []
    if modifiers:
        if result.outcome_type == "binary":
            notes.append("interactions not estimated: they are implemented for continuous outcomes only")
        else:
            found = estimate_interactions(ipd, outcome, modifiers, control=control, m=m, seed=seed, method=method,
                                          test=test, level=level, covariate_adjust=covariate_adjust)
    rows = result.per_trial
    if rows:
        yi = [r["estimate"] for r in rows]
        vi = [r["se"] ** 2 for r in rows]
        egger = egger_test(yi, vi)
        loo = leave_one_out(yi, vi, [r["trial_id"] for r in rows], method=method, test=test, level=level)
        if not loo:
            notes.append("leave-one-out needs at least 3 trials")
    else:
        egger = EggerResult(done=False, k=0, reason="no usable trial")
        loo = []
    return MetaReport(outcome=outcome, control=control, two_stage=result, interactions=found, egger=egger,
                      leave_one_out=loo, notes=notes)
