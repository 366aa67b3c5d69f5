"""The time and memory estimate before fitting (`validate.estimate`): pilots on a representative fold, extrapolated
by a power law; the pipeline's refusal when the memory estimate exceeds what the machine has. Its accuracy against
full runs is a benchmark (experiments/benchmarks RESULTS), not a timed test."""

import os
import signal

import numpy as np
import pytest

from mbi_predict.config import parse_config
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError
from mbi_predict.validate import estimate, loto


def _config(**extra):
    return parse_config({"experiment": "t", "data": {"simulate": {}}, "outcome": "distress_fu1_6", "seed": 4,
                         "models": [{"name": "reference", "estimator": "reference"},
                                    {"name": "t_enet", "kind": "effect", "estimator": "t_learner_enet"}],
                         "validation": {"bootstrap": 20}, **extra})


@pytest.fixture(scope="module")
def prepared():
    ipd = check_ipd(simulate_latent("galante2023", seed=3, n_trials=5, n=1600).ipd)
    data = loto.prepare_data(ipd, outcome="distress_fu1_6", study_traits=["setting"])
    return data, loto.plan_folds(data)


def test_small_data_are_not_estimated(prepared):
    data, plan = prepared
    assert data.n < estimate.MIN_ROWS
    assert estimate.estimate_run(_config(), data, plan, workers=2, verdict_models=["t_enet"], null_B=19,
                                 final_models=True) is None


def test_the_estimate_counts_every_job_the_run_makes(prepared, monkeypatch):
    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    calls = []
    real = estimate.time_jobs

    def timed(jobs, pilot):  # the pilots really run; their timings are set: 1 s full, 2 s light, twice that at 2x
        calls.append([(name, light, len(job.fold.train), len(job.fold.test)) for name, light, job in jobs])
        _, peak = real(jobs, pilot)
        scale = {1: 0, 2: 1, 3: 2}[len(calls)]  # the first call is the untimed warm-up
        return [(2.0 if light else 1.0) * scale for _, light, _ in jobs], peak

    monkeypatch.setattr(estimate, "time_jobs", timed)
    monkeypatch.setattr(estimate, "transfer_seconds", lambda data: 0.5)  # sending the data: once per job
    found = estimate.estimate_run(_config(), data, plan, workers=2, verdict_models=["t_enet"], null_B=19,
                                  final_models=True, in_process=True)
    fold = estimate.representative_fold(plan)
    # two pilots: a quarter and a half of the fold, every model full, the verdict model also light
    assert [[(name, light) for name, light, _, _ in pilot] for pilot in calls] == \
        [[("reference", False), ("t_enet", False), ("t_enet", True)]] * 3
    small, large = estimate.FRACTIONS
    assert (estimate.WARM_UP, small, large) == (1 / 8, 1 / 4, 1 / 2)
    assert calls[0][0][2] == round(len(fold.train) * estimate.WARM_UP)
    calls = calls[1:]
    assert calls[0][0][2] == round(len(fold.train) * small) and calls[1][0][2] == round(len(fold.train) * large)
    assert calls[1][0][3] == min(len(fold.test), max(round(len(fold.test) * large), estimate.MIN_PILOT_TEST))
    # time doubles for 2x the rows: exponent 1, so each fold costs the half pilot's time scaled to the fold's own
    # training rows, plus sending the data; the parts are the jobs scheduled in the run's order on 2 workers
    k, pilot_train = len(plan.folds), round(len(fold.train) * large)
    sizes = [len(f.train) for f in plan.folds]
    assert len(set(sizes)) > 1  # folds of different sizes: the median fold alone would be wrong
    full = [2.0 * n / pilot_train + 0.5 for n in sizes]
    light = [4.0 * n / pilot_train + 0.5 for n in sizes]
    final = 2.0 * (len(fold.train) + len(fold.test)) / pilot_train + 0.5
    assert found.exponents == {"reference": 1.0, "t_enet": 1.0}
    assert found.parts["folds"] == pytest.approx(estimate.makespan(full + full, 2))
    assert found.parts["final models"] == pytest.approx(final)  # two refits at once
    assert found.parts["verdict calibration"] == pytest.approx(estimate.makespan(light * 19, 2))
    assert found.parts["verdict calibration"] >= 19 * sum(light) / 2
    assert found.seconds == pytest.approx(sum(found.parts.values()))
    assert found.by_model["t_enet"] == pytest.approx(sum(full) + final + 19 * sum(light))
    assert found.dominant == "t_enet"
    assert found.rows == data.n and found.folds == k and found.workers == 2 and found.peak_bytes > 0
    line = found.line()
    assert line.startswith("estimated ") and "GiB" in line and "mostly t_enet" in line and "\n" not in line
    assert ("dask" in line) == (found.seconds > 600)


def test_a_tuned_model_scales_its_fit_by_the_trials_but_sends_the_data_once(prepared, monkeypatch):
    """The pilots tune with `PILOT_TUNING_TRIALS` trials; a model tuned with 8 costs 8/2 of the pilot's fit time,
    plus the same one transfer of the data per job (it was scaled with the trials, an overestimate)."""
    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    calls = []
    real = estimate.time_jobs

    def timed(jobs, pilot):
        calls.append(None)
        _, peak = real(jobs, pilot)
        return [1.0 * {1: 0, 2: 1, 3: 2}[len(calls)] for _ in jobs], peak

    monkeypatch.setattr(estimate, "time_jobs", timed)
    monkeypatch.setattr(estimate, "transfer_seconds", lambda data: 0.5)
    config = parse_config({"experiment": "t", "data": {"simulate": {}}, "outcome": "distress_fu1_6", "seed": 4,
                           "models": [{"name": "enet", "estimator": "elastic_net", "tuning": {"n_trials": 8}}],
                           "validation": {"bootstrap": 20}})
    found = estimate.estimate_run(config, data, plan, workers=1, verdict_models=[], null_B=0, final_models=False,
                                  in_process=True)
    fold = estimate.representative_fold(plan)
    pilot_train = round(len(fold.train) * estimate.FRACTIONS[1])
    # the half pilot's 2 s, scaled to each fold's training rows (exponent 1) and by 8/2 trials, the data sent once
    per_job = [2.0 * len(f.train) / pilot_train * 8 / estimate.PILOT_TUNING_TRIALS + 0.5 for f in plan.folds]
    assert found.parts["folds"] == pytest.approx(sum(per_job))  # one worker: one job after the other


def test_real_pilots_give_a_positive_finite_estimate(prepared, monkeypatch):
    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    found = estimate.estimate_run(_config(), data, plan, workers=1, verdict_models=[], null_B=0,
                                  final_models=False, in_process=True)
    assert np.isfinite(found.seconds) and found.seconds > 0
    assert found.parts["verdict calibration"] == 0 and found.parts["final models"] == 0
    assert set(found.exponents) == {"reference", "t_enet"}
    assert all(0.3 <= b <= 1.5 for b in found.exponents.values())


def test_pilots_run_in_as_many_fresh_processes_at_once_as_the_run_has_workers(prepared, monkeypatch):
    from joblib.externals.loky import ProcessPoolExecutor

    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    pools = []
    real_init = ProcessPoolExecutor.__init__

    def init(self, max_workers=None, **kwargs):
        pools.append(max_workers)
        real_init(self, max_workers=max_workers, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "__init__", init)
    found = estimate.estimate_run(_config(), data, plan, workers=2, verdict_models=["t_enet"], null_B=3,
                                  final_models=True)
    from joblib import cpu_count

    assert pools == [min(2, cpu_count())]
    assert np.isfinite(found.seconds) and all(v > 0 for v in found.parts.values()) and found.peak_bytes > 0


def test_sending_the_data_is_timed_on_the_whole_table(prepared):
    data, _ = prepared
    small = estimate.subset(data, np.arange(100))
    assert 0 < estimate.transfer_seconds(small) < 5 and estimate.transfer_seconds(data) > 0


def test_jobs_are_scheduled_in_order_on_the_first_free_worker():
    # 2 workers: 3 | 1, then 1 joins the second (free at 1), then 2 the second (free at 2): ends 4; the last job
    # idles a worker, which dividing the total (7) by the workers (3.5) does not see
    assert estimate.makespan([3.0, 1.0, 1.0, 2.0], 2) == 4.0
    assert estimate.makespan([2.0, 2.0, 2.0], 2) == 4.0
    assert estimate.makespan([1.0, 2.0, 3.0], 1) == 6.0
    assert estimate.makespan([5.0], 4) == 5.0 and estimate.makespan([], 2) == 0.0


def test_pilots_timed_in_several_processes_at_once_are_averaged_and_their_peak_is_the_largest():
    runs = [[([1.0, 2.0], 100), ([3.0, 4.0], 300)],
            [([2.0, 4.0], 150), ([5.0, 4.0], 250)]]
    assert estimate.combine_copies(runs) == [([1.5, 3.0], 150), ([4.0, 4.0], 300)]


def test_extrapolation_is_a_clipped_power_law():
    assert estimate.extrapolate(1.0, 4.0, 4.0, 4.0) == (pytest.approx(16.0), pytest.approx(1.0))
    value, b = estimate.extrapolate(1.0, 100.0, 4.0, 4.0)  # steeper than rows^1.5: clipped
    assert b == 1.5 and value == pytest.approx(100.0 * 4.0 ** 1.5)
    value, b = estimate.extrapolate(1.0, 1.0, 4.0, 4.0)    # flat: at least rows^0.3
    assert b == 0.3


def test_the_pilot_fold_keeps_training_and_held_out_rows_apart(prepared):
    data, plan = prepared
    fold = plan.folds[0]
    rows, small = estimate.pilot_fold(fold, 0.25, seed=1)
    assert set(rows[small.train]) <= set(fold.train) and set(rows[small.test]) <= set(fold.test)
    sub = estimate.subset(data, rows)
    assert sub.n == len(rows) and set(sub.trial[small.test]) == {fold.label}
    assert fold.label not in set(sub.trial[small.train])


def test_the_pipeline_refuses_a_run_that_would_not_fit_in_memory(prepared, monkeypatch):
    from mbi_predict.pipeline import folds as stage
    from mbi_predict.pipeline.load import RunInputs

    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    monkeypatch.setattr(stage, "available_memory", lambda: 1024.0)
    monkeypatch.setattr(stage, "estimate_run", lambda *a, **k: estimate.CostEstimate(
        rows=data.n, folds=len(plan.folds), workers=2, seconds=100.0, peak_bytes=3 * 2**30,
        parts={"folds": 100.0}, by_model={"t_enet": 200.0}, pilot_seconds=1.0))
    inputs = RunInputs(_config(), None, data, plan, {})
    with pytest.raises(ConfigError, match=r"data too large .* estimated 2 min of fitting and 3\.0 GiB peak memory"):
        stage.estimate(inputs, 2, final_models=False)
    assert stage.estimate(RunInputs(_config(validation={"estimate": False}), None, data, plan, {}), 2,
                          final_models=False) is None


def test_a_causal_forest_pilot_grows_trees_of_the_full_fold_s_size():
    from mbi_predict.models.effect import MAX_TREE_ROWS, CausalForest

    config = parse_config({"experiment": "t", "data": {"simulate": {}}, "outcome": "distress_fu1_6", "models": [
        {"name": "cf", "kind": "effect", "estimator": "causal_forest"},
        {"name": "cf_set", "kind": "effect", "estimator": "causal_forest", "params": {"max_samples": 0.3}},
        {"name": "xgb", "estimator": "xgboost", "tuning": {"n_trials": 20}}]})
    cf, cf_set, xgb = config.models
    pilot = estimate.pilot_model(cf, 190_000, 47_500)
    assert pilot.params["max_samples"] == pytest.approx(MAX_TREE_ROWS / 47_500)
    # rows per tree of the pilot's fit = rows per tree of the full fit
    assert CausalForest()._max_samples(190_000) == MAX_TREE_ROWS == pytest.approx(47_500 * pilot.params["max_samples"])
    small = estimate.pilot_model(cf, 12_000, 3_000)  # below the cap: 45% of the full fold, at most half the pilot
    assert small.params["max_samples"] == 0.5
    assert estimate.pilot_model(cf_set, 190_000, 47_500).params == {"max_samples": 0.3}
    capped = estimate.pilot_model(xgb, 190_000, 47_500)
    assert capped.tuning.n_trials == estimate.PILOT_TUNING_TRIALS and capped.params == xgb.params
    assert cf.params == {}  # the config is not changed


def test_an_interrupted_pilot_is_ended_not_waited_for(prepared, monkeypatch):
    """Ctrl-C while the pilots run in their worker: the worker is killed at once (a 1M pilot takes minutes)."""
    import time

    from joblib.externals.loky import ProcessPoolExecutor

    data, plan = prepared
    shut = []
    real_shutdown = ProcessPoolExecutor.shutdown

    def shutdown(self, wait=True, kill_workers=False):
        shut.append(kill_workers)
        return real_shutdown(self, wait=wait, kill_workers=kill_workers)

    monkeypatch.setattr(ProcessPoolExecutor, "shutdown", shutdown)
    monkeypatch.setattr(estimate, "time_pilots", _sleep_then_time)
    start = time.monotonic()
    import threading

    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while the pilot runs
    with pytest.raises(KeyboardInterrupt):
        estimate._in_fresh_process([([], estimate.subset(data, np.arange(10)))], 1)
    assert shut == [True] and time.monotonic() - start < 30


def _sleep_then_time(pilots, threads=None):
    import time

    time.sleep(120)
    return []
