"""The leave-one-trial-out engine: fold plans, no leakage of the held-out trial, the effect-model dispatch point,
identical results whatever n_jobs."""

import numpy as np
import pandas as pd
import pytest

from mbi_predict.config import parse_config
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError, DataError
from mbi_predict.validate import loto


def _ipd(n_trials=5, n=700, seed=11):
    return check_ipd(simulate_latent("galante2023", seed=seed, n_trials=n_trials, n=n).ipd)


def _config(models, **extra):
    return parse_config({"experiment": "t", "data": {"simulate": {}}, "outcome": "distress_fu1_6",
                         "models": models, **extra})


@pytest.fixture(scope="module")
def data():
    return loto.prepare_data(_ipd(), outcome="distress_fu1_6", study_traits=["setting"])


def test_plan_holds_out_each_trial_and_reports_skips():
    ipd = _ipd(n_trials=6, n=900)
    passive = sorted(np.unique(loto.prepare_data(ipd, outcome="distress_fu1_6").trial))
    empty, tiny = passive[0], passive[1]
    ipd.loc[ipd["trial_id"] == empty, "distress_fu1_6"] = np.nan         # outcome missing throughout
    in_comparison = (ipd["trial_id"] == tiny) & ((ipd["arm"] == 1) | (ipd["control_type"] == "passive"))
    ipd.loc[ipd.index[in_comparison][5:], "distress_fu1_6"] = np.nan      # 5 observed: too small to hold out
    data = loto.prepare_data(ipd, outcome="distress_fu1_6")
    plan = loto.plan_folds(data, min_trial_size=20)
    held = [f.label for f in plan.folds]
    skipped = {s["trial_id"]: s["reason"] for s in plan.skipped}
    assert "missing for every participant" in skipped[empty]
    assert "min_trial_size" in skipped[tiny]
    assert set(held).isdisjoint(skipped)
    everything = set(np.unique(data.trial)) | {e["trial_id"] for e in data.excluded_trials}
    assert set(held) | set(skipped) == everything                     # nothing silently dropped
    for fold in plan.folds:
        assert set(data.trial[fold.test]) == {fold.label}
        assert fold.label not in set(data.trial[fold.train])
        assert len(fold.train) + len(fold.test) == data.n
    counts = {t["trial_id"]: t for t in plan.trials}
    observed_tiny = int(ipd.loc[in_comparison, "distress_fu1_6"].notna().sum())
    assert 0 < observed_tiny <= 5
    assert counts[tiny]["n_missing_outcome"] == counts[tiny]["n"] - observed_tiny == int(in_comparison.sum()) - observed_tiny


def test_comparison_rows_and_one_arm_trials(data):
    ipd = _ipd()
    active = loto.prepare_data(ipd, outcome="distress_fu1_6", control_type="active")
    rows = (ipd["arm"] == 1) | (ipd["control_type"] == "active")
    kept = ipd.loc[rows & ~ipd["trial_id"].isin([e["trial_id"] for e in active.excluded_trials])]
    assert active.n == len(kept) and set(active.participant) == set(kept["participant_id"])
    for prepared, kind in ((data, "passive"), (active, "active")):
        for trial in np.unique(prepared.trial):
            assert set(prepared.arm[prepared.trial == trial]) == {0, 1}
    excluded = {e["trial_id"] for e in data.excluded_trials} | {e["trial_id"] for e in active.excluded_trials}
    assert excluded, "the simulated consortium has trials without one of the control kinds"
    assert all("control arm" in e["reason"] for e in data.excluded_trials)


def test_fewer_than_three_trials_asks_for_kfold_and_kfold_is_internal():
    data = loto.prepare_data(_ipd(n_trials=2, n=400), outcome="distress_fu1_6")
    with pytest.raises(ConfigError, match="validation.scheme: kfold"):
        loto.plan_folds(data, scheme="loto")
    plan = loto.plan_folds(data, scheme="kfold", n_folds=4, seed=1)
    assert plan.scheme == "kfold" and "internal, not external" in plan.note
    assert len(plan.folds) == 4
    test_rows = np.concatenate([f.test for f in plan.folds])
    assert sorted(test_rows) == list(range(data.n))
    for fold in plan.folds:  # stratified on arm
        assert abs(data.arm[fold.test].mean() - data.arm.mean()) < 0.05


def test_bad_outcome_and_covariates():
    ipd = _ipd(n_trials=3, n=400)
    with pytest.raises(DataError, match="outcome is not a column"):
        loto.prepare_data(ipd, outcome="distress_fu9")
    with pytest.raises(DataError, match="covariate not in the data"):
        loto.prepare_data(ipd, outcome="distress_fu1_6", covariates=["age", "shoe_size"])
    ipd["flat_post"] = 1.0
    with pytest.raises(DataError, match="no variance"):
        loto.prepare_data(ipd, outcome="flat_post")


def test_fitted_preprocessing_has_not_seen_the_held_out_trial():
    """Leakage guard: the fold's imputer and scaler statistics are those of the training trials' rows only."""
    ipd = _ipd()
    # make the held-out trial's covariates extreme, so any leak would move the statistics visibly
    ipd.loc[ipd["trial_id"] == "T01", ["age", "baseline_anxiety"]] += 100.0
    data = loto.prepare_data(ipd, outcome="distress_fu1_6")
    plan = loto.plan_folds(data)
    fold = next(f for f in plan.folds if f.label == "T01")
    config = _config([{"name": "enet", "estimator": "elastic_net", "tuning": {"n_trials": 2}}])
    job = loto.make_jobs(config, plan, keep_models=True)[[f.label for f in plan.folds].index("T01")]
    result = loto.run_fold(job, data)
    numeric = result.fitted_model.named_steps["features"].named_transformers_["num"]
    columns = list(data.features.numeric)
    fitted_rows = fold.train[np.isfinite(data.y[fold.train])]
    expected_means = data.X.iloc[fitted_rows][columns].mean().to_numpy()  # pandas skips NaN like the imputer
    np.testing.assert_allclose(numeric.named_steps["impute"].statistics_, expected_means, rtol=1e-12)
    assert numeric.named_steps["impute"].statistics_[columns.index("age")] < 80
    assert result.predictions["trial_id"].eq("T01").all()
    assert len(result.predictions) == len(fold.test)                       # every held-out row gets a prediction
    assert result.n_missing_outcome == int((~np.isfinite(data.y[fold.test])).sum())
    assert result.n == len(fold.test) - result.n_missing_outcome


def test_effect_kind_dispatches_to_its_fold_runner(data, monkeypatch):
    calls = []

    def fake_effect_fold(job, prepared, on_trial=None):
        calls.append((job.model.name, job.fold.label, len(job.fold.train)))
        return "effect-result"

    monkeypatch.setitem(loto.FOLD_RUNNERS, "effect", fake_effect_fold)
    config = _config([{"name": "tl", "kind": "effect", "estimator": "t_learner_enet"}])
    plan = loto.plan_folds(data)
    assert loto.run_jobs(loto.make_jobs(config, plan), data) == ["effect-result"] * len(plan.folds)
    assert [c[1] for c in calls] == [f.label for f in plan.folds]


def test_effect_fold_fits_a_cate_model_and_scores_benefit(data):
    pytest.importorskip("mbi_predict.models.effect")
    pytest.importorskip("mbi_predict.validate.benefit")
    config = _config([{"name": "il", "kind": "effect", "estimator": "interaction_linear"}])
    plan = loto.plan_folds(data)
    job = loto.make_jobs(config, plan)[0]
    result = loto.run_fold(job, data)
    assert result.kind == "effect"
    assert "cate" in result.predictions and len(result.predictions) == len(job.fold.test)
    assert "benefit_calibration_slope" in result.metrics
    assert np.isfinite(result.metrics["ate"].value) and result.metrics["ate"].variance > 0


def test_results_identical_whatever_n_jobs(data):
    config = _config([{"name": "xgb", "estimator": "xgboost", "params": {"n_estimators": 30},
                       "tuning": {"n_trials": 2}}, {"name": "ref", "estimator": "reference"}])
    plan = loto.plan_folds(data)
    jobs = loto.make_jobs(config, plan)
    serial = loto.run_jobs(jobs, data, n_jobs=1)
    parallel = loto.run_jobs(jobs, data, n_jobs=2)
    for a, b in zip(serial, parallel):
        assert (a.model, a.held_out) == (b.model, b.held_out)
        assert a.best_params == b.best_params
        assert a.metrics == b.metrics
        pd.testing.assert_frame_equal(a.predictions, b.predictions)


def test_seeds_depend_on_labels_not_order():
    assert loto.derive_seed(1, "m", "T01") == loto.derive_seed(1, "m", "T01")
    assert len({loto.derive_seed(1, "m", t) for t in ("T01", "T02", "T03")}) == 3
    assert loto.derive_seed(1, "m", "T01") != loto.derive_seed(2, "m", "T01")


def test_a_trial_too_small_per_arm_for_effect_validation_is_reported_not_held_out():
    from mbi_predict.data.simulate import simulate_latent
    from mbi_predict.validate.loto import plan_folds, prepare_data

    frame = simulate_latent("galante2023", seed=4, n_trials=5, n=900).ipd
    first = frame["trial_id"] == "T01"
    # leave 6 observed MBI participants in T01: enough for prognosis, too few to validate predicted benefit
    mbi_rows = frame.index[first & (frame["arm"] == 1) & frame["distress_fu1_6"].notna()]
    frame.loc[mbi_rows[6:], "distress_fu1_6"] = float("nan")
    data = prepare_data(frame, outcome="distress_fu1_6", covariates="all", control_type="passive")
    plain = plan_folds(data, min_trial_size=5)
    strict = plan_folds(data, min_trial_size=5, min_per_arm=10)
    assert "T01" in [f.label for f in plain.folds]
    assert "T01" not in [f.label for f in strict.folds]
    reason = next(s["reason"] for s in strict.skipped if s["trial_id"] == "T01")
    assert "per arm" in reason and "used for training" in reason
