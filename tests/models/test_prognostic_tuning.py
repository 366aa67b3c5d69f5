"""Nested tuning: inner folds hold out whole training trials, the budget and the search space are respected, the
family defaults are tried first, studies can be shared through a storage URL, and results are seeded."""

import re
from dataclasses import replace

import numpy as np
import pytest

from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError
from mbi_predict.models import tuning
from mbi_predict.models.prognostic import FAMILIES, make_prognostic_model, predict_outcome
from mbi_predict.models.tuning import inner_splits, search_space, tune
from mbi_predict.validate.loto import prepare_data


@pytest.fixture(scope="module")
def data():
    return prepare_data(check_ipd(simulate_latent("galante2023", seed=6, n_trials=6, n=800).ipd),
                        outcome="distress_fu1_6")


def _tune(data, **kwargs):
    rows = np.isfinite(data.y)
    X, y, groups = data.X[rows], data.y[rows], data.trial[rows]

    def build(params):
        return make_prognostic_model("elastic_net", "continuous", params, 0, features=data.features)

    options = dict(groups=groups, strata=data.arm[rows], task="continuous",
                   space=search_space("elastic_net", "continuous"), n_trials=4, timeout=None, seed=1,
                   defaults=FAMILIES["elastic_net"].defaults["continuous"])
    options.update(kwargs)
    return tune(build, lambda m, X_: predict_outcome(m, X_, "continuous"), X, y, **options)


def test_inner_folds_hold_out_whole_trials():
    groups = np.repeat(["A", "B", "C", "D"], 10)
    for train, valid in inner_splits(groups, np.zeros(40), 3, 0):
        assert set(groups[train]).isdisjoint(groups[valid])
    two = inner_splits(np.repeat(["A", "B"], 10), np.zeros(20), 3, 0)
    assert len(two) == 2 and all(set(np.repeat(["A", "B"], 10)[v]) in ({"A"}, {"B"}) for _, v in two)
    strata = np.tile([0, 1], 15)
    one = inner_splits(np.repeat(["A"], 30), strata, 3, 0)  # one trial: arm-stratified row folds
    assert len(one) == 3 and all(abs(strata[v].mean() - 0.5) < 0.11 for _, v in one)


def test_search_space_overrides_and_fixed_params():
    space = search_space("xgboost", "continuous", {"max_depth": {"type": "int", "low": 2, "high": 3}},
                         fixed={"n_estimators": 50})
    assert space["max_depth"]["low"] == 2 and space["max_depth"]["high"] == 3
    assert "n_estimators" not in space and "learning_rate" in space
    assert search_space("reference", "binary") == {}


def test_tuning_budget_defaults_first_and_seeded(data):
    result = _tune(data)
    assert result.n_trials == 4 and result.n_complete + result.n_pruned == 4
    assert 1e-3 <= result.best_params["alpha"] <= 1 and 0 <= result.best_params["l1_ratio"] <= 1
    assert result.best_value <= result.history[0]  # never worse than the enqueued family defaults
    assert result.best_value == pytest.approx(min(result.history))
    again = _tune(data)
    assert again.best_params == result.best_params and again.history == result.history
    other = _tune(data, seed=2)
    assert other.history[1:] != result.history[1:]


def test_shared_storage_reads_a_finished_study_and_never_resumes_one_on_other_inputs(data, tmp_path,
                                                                                     monkeypatch):
    """A stored study is keyed by its inputs: a rerun reads the finished study (same parameters, no new trial);
    changed data, seed or model settings start a new study instead of inheriting another data set's best."""
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3)
    again = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3)  # a rerun, or a late worker
    assert first.n_trials == 3 and again.n_trials == 3  # read, not extended: the budget was spent
    assert first.trials_before == 0 and again.trials_before == 3
    assert again.best_params == first.best_params and again.history == first.history
    assert re.fullmatch(r"exp:enet:T01:0:[0-9a-f]{16}", first.study_name) and again.study_name == first.study_name

    rows = np.isfinite(data.y)
    shifted = replace(data, y=np.where(rows, data.y + 0.5 * (data.trial == data.trial[rows][0]), data.y))
    other_data = _tune(shifted, storage=storage, study_name="exp:enet:T01:0", n_trials=3)
    other_seed = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3, seed=2)
    other_model = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3,
                        identity={"params": {"max_iter": 500}})
    with monkeypatch.context() as patched:  # the same inputs under an upgraded library
        versions = tuning._code_versions()
        patched.setattr(tuning, "_code_versions", lambda: {**versions, "scikit-learn": "99.0"})
        other_code = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3)
    names = {first.study_name, other_data.study_name, other_seed.study_name, other_model.study_name,
             other_code.study_name}
    assert len(names) == 5
    assert all(r.n_trials == 3 and r.trials_before == 0 for r in (other_data, other_seed, other_model, other_code))
    assert len(optuna.get_all_study_summaries(storage)) == 5
    with pytest.raises(ConfigError, match="cannot name a stored study"):  # its str() could hold an address
        _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3, identity={"estimator": object()})
    with pytest.raises(ConfigError, match="tuning.storage"):
        _tune(data, storage="nosuchdb://x", study_name="s")


def test_a_study_left_half_done_by_a_killed_run_is_resumed_up_to_its_budget(data, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    calls = []

    def killed_after_two():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=5, on_trial=killed_after_two)
    (summary,) = optuna.get_all_study_summaries(storage)
    killed = optuna.load_study(study_name=summary.study_name, storage=storage)
    kept = [t.value for t in killed.trials]
    assert len(kept) == 2
    resumed = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=5)
    assert resumed.study_name == summary.study_name and len(optuna.get_all_study_summaries(storage)) == 1
    assert resumed.trials_before == 2 and resumed.n_trials == 5  # 2 kept, 3 added: the budget, not 5 more
    assert resumed.n_complete + resumed.n_pruned == 5
    assert [t.value for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials[:2]] == kept
    assert resumed.best_value <= resumed.history[0]  # the family defaults, enqueued first, were among them


def test_a_study_killed_in_its_first_trial_still_scores_the_family_defaults(data, tmp_path):
    """Ctrl-C inside the defaults' trial leaves it failed; the resumed study enqueues them again, so tuning still
    never ends worse than the defaults."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    defaults_only = _tune(data, n_trials=1)  # no storage: the defaults' inner-fold loss
    calls = []

    def interrupted_build(params):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return make_prognostic_model("elastic_net", "continuous", params, 0, features=data.features)

    rows = np.isfinite(data.y)
    with pytest.raises(KeyboardInterrupt):
        tune(interrupted_build, lambda m, X_: predict_outcome(m, X_, "continuous"), data.X[rows], data.y[rows],
             groups=data.trial[rows], strata=data.arm[rows], task="continuous",
             space=search_space("elastic_net", "continuous"), n_trials=3, timeout=None, seed=1,
             defaults=FAMILIES["elastic_net"].defaults["continuous"], storage=storage, study_name="exp:enet:T01:0")
    resumed = _tune(data, storage=storage, study_name="exp:enet:T01:0", n_trials=3)
    assert resumed.n_complete + resumed.n_pruned == 3 and resumed.n_trials == 4  # the failed trial is kept
    assert defaults_only.history[0] in resumed.history and resumed.best_value <= defaults_only.history[0]


def test_no_budget_means_no_tuning(data):
    result = _tune(data, n_trials=0)
    assert result.best_params == {} and result.n_trials == 0
