"""The study report: one self-contained page from a run folder; missing blocks said, never fatal; aggregates only."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from mbi_predict.report.study import collect, write_study_report

from test_card_effect import BLP, INTERACTIONS, MODEL_VERDICT, RUN_VERDICT, SHAP


def _effect_plots(folder, trials):
    """Real figures of the package's writers for the effect model "cf" (aggregates of synthetic predictions)."""
    from mbi_predict.report.plots import write_plots

    rng = np.random.default_rng(0)
    trial = np.repeat(trials, 120)
    x = rng.normal(size=len(trial))
    cate = -0.3 - 0.2 * x
    pseudo = cate + rng.normal(0, 1.2, len(trial))
    return write_plots(folder, forests={}, calibration={},
                       benefit_calibration={"cf": {"pseudo": pseudo, "cate": cate, "trial": trial,
                                                   "higher_is_better": False}}, format="png", dpi=100)


@pytest.fixture
def study_run(tmp_path, run_summary, ipd):
    """A demo-shaped output folder: run/ (summary.json with a prognostic and an effect model, plots, a card) and
    meta/<analysis>/meta.json beside it."""
    from mbi_predict.meta import run_meta
    from mbi_predict.report.card import build_card, write_card
    from mbi_predict.report.plots import write_plots

    summary = copy.deepcopy(run_summary)
    trials = [t["trial_id"] for t in summary["data"]["trials"]]
    summary["models"]["cf"] = {
        "task": "effect", "estimator": "causal_forest", "outcome_type": "continuous", "per_trial": [],
        "pooled": {"rate_autoc": {"estimate": 0.05, "ci_low": 0.01, "ci_high": 0.09, "pi_low": -0.02,
                                  "pi_high": 0.12, "tau2": 0.001, "k": 5},
                   "benefit_calibration_slope": {"estimate": 0.9, "ci_low": 0.2, "ci_high": 1.6, "k": 5}},
        "shap": copy.deepcopy(SHAP), "heterogeneity": copy.deepcopy(MODEL_VERDICT),
        "gates": {"scale": "benefit in SD units", "groups": [
            {"group": g, "estimate": 0.1 * g, "ci_low": 0.1 * g - 0.2, "ci_high": 0.1 * g + 0.2, "pi_low": None,
             "pi_high": None, "k": 5} for g in range(1, 6)]},
        "ate_clustered": {"estimate": -0.27, "ci_low": -0.38, "ci_high": -0.17}}
    summary["classical_interactions"] = copy.deepcopy(INTERACTIONS)
    summary["best_linear_projection"] = copy.deepcopy(BLP)
    summary["heterogeneity"] = {**copy.deepcopy(RUN_VERDICT), "primary_model": "cf"}
    run = tmp_path / "out" / "run"
    (run / "plots").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary))
    rng = np.random.default_rng(1)
    observed = rng.normal(size=600)
    write_plots(run / "plots", forests={}, calibration={"elastic_net": {
        "observed": observed, "predicted": 0.8 * observed + rng.normal(0, 0.5, 600),
        "trial": np.repeat(trials, 120), "task": "continuous"}}, format="png", dpi=100)
    _effect_plots(run / "plots", trials)
    report = run_meta(ipd, "distress_post", control="passive", modifiers=["baseline_distress"], m=2, seed=0)
    (tmp_path / "out" / "meta" / "distress_post_vs_passive").mkdir(parents=True)
    (tmp_path / "out" / "meta" / "distress_post_vs_passive" / "meta.json").write_text(
        json.dumps(report.to_dict(), default=float))
    card = build_card(run)
    for fmt in ("html", "json"):
        write_card(card, run / f"model_card.{fmt}", fmt=fmt)
    return run


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.anchors, self.external = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.anchors.append(attrs["href"][1:])
        if tag in ("script", "link", "iframe") or (tag == "img" and not attrs["src"].startswith("data:")):
            self.external.append(tag)


def test_the_report_reads_the_run_top_to_bottom(study_run, tmp_path):
    html_path, md_path = write_study_report(study_run, tmp_path / "report" / "study")
    assert html_path.name == "study.html" and md_path.name == "study.md"
    page = html_path.read_text()
    parser = _Page()
    parser.feed(page)
    assert parser.external == []                                    # self-contained: no script, no remote file
    assert not re.search(r"(src|href)=\"https?://", page)
    assert len(parser.images) >= 6 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.anchors and set(parser.anchors) <= parser.ids     # the contents link to every section
    order = [page.rindex(f">{title}<") for title in ("At a glance", "Data and harmonisation",
                                                     "Classical two-stage meta-analysis",
                                                     "Models and the heterogeneity verdict", "Who benefits",
                                                     "Groups, harm and a treatment policy", "Calibration and benefit",
                                                     "Model cards")]
    assert order == sorted(order)
    models = page.split(">Models and the heterogeneity verdict<")[-1]
    assert models.index("Run-level verdict: evidence") < models.index("Prognostic models")  # the verdict first
    assert "model_card.html" in page and "model_card.json" in page   # links to the cards, relative
    assert 'media="print"' in page or "@media print" in page
    assert "@media (max-width" in page and 'name="viewport"' in page
    md = md_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((md_path.parent / link).is_file() for link in links)
    assert "e-1" not in page and "e-0" not in md   # no unreadable exponents such as -1.96e-17


def test_missing_blocks_are_said_not_run(run_folder, tmp_path):
    """A prognostic-only run without meta-analysis, SHAP, verdict or cards: the report is written and says so."""
    html_path, md_path = write_study_report(run_folder, tmp_path / "r")
    md = md_path.read_text()
    assert "The classical meta-analysis was not run for this report" in md
    assert "No effect model was run, so there is no heterogeneity verdict" in md
    assert "No effect model was run: who benefits was not estimated" in md
    assert "No model card was written for this run yet" in md
    assert html_path.read_text().count("Not run or not found.") >= 4


def test_no_participant_level_content(study_run, ipd, tmp_path):
    html_path, md_path = write_study_report(study_run, tmp_path / "r")
    text = html_path.read_text() + md_path.read_text()
    ids = set(ipd["participant_id"].astype(str))
    assert not any(re.search(rf"\b{re.escape(pid)}\b", text) for pid in ids)


def test_collect_finds_meta_cards_and_leaves_the_run_untouched(study_run, tmp_path):
    before = sorted((p.relative_to(study_run), p.stat().st_mtime_ns) for p in study_run.rglob("*"))
    inputs = collect(study_run)
    assert [record["outcome"] for _, record in inputs.metas] == ["distress_post"]
    assert set(inputs.cards) == {"elastic_net"}
    write_study_report(study_run, tmp_path / "r")
    assert sorted((p.relative_to(study_run), p.stat().st_mtime_ns) for p in study_run.rglob("*")) == before


def test_svg_figures_embed_as_svg(study_run, tmp_path):
    html_path, _ = write_study_report(study_run, tmp_path / "r", figure_format="svg")
    assert "data:image/svg+xml;base64," in html_path.read_text()
