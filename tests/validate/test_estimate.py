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
                                 final_models=True) == (None, {})


def _timed_pilots(monkeypatch, full: float, light: float, calls: list, tuning: float = 0.0):
    """time_jobs with set timings (the jobs really run): the warm-up 0, the half pilot ``full``/``light`` (of which
    ``tuning`` seconds tuning), the whole fold twice that."""
    real = estimate.time_jobs

    def timed(jobs, pilot, keep=False):
        calls.append([(name, light_, job) for name, light_, job in jobs])
        _, peak, results, _ = real(jobs, pilot, keep)
        scale = {1: 0, 2: 1, 3: 2}[len(calls)]
        return ([(light if light_ else full) * scale for _, light_, _ in jobs], peak, results,
                [tuning * scale for _ in jobs])

    monkeypatch.setattr(estimate, "time_jobs", timed)
    monkeypatch.setattr(estimate, "transfer_seconds", lambda data: 0.5)  # sending the data: once per job


def test_the_estimate_counts_every_job_the_run_makes_and_hands_back_those_it_ran(prepared, monkeypatch):
    import dataclasses

    data, plan = prepared
    # folds that leave some rows out of both sides (a plan may): the final refits still fit every analysed row
    plan = dataclasses.replace(plan, folds=tuple(dataclasses.replace(f, train=f.train[:-40]) for f in plan.folds))
    assert all(len(f.train) + len(f.test) < data.n for f in plan.folds)
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    calls = []
    _timed_pilots(monkeypatch, 1.0, 2.0, calls)
    config = _config()
    jobs = loto.make_jobs(config, plan)
    found, done = estimate.estimate_run(config, data, plan, workers=2, verdict_models=["t_enet"], null_B=19,
                                        final_models=True, jobs=jobs, in_process=True)
    fold = estimate.representative_folds(plan)[0]
    # three pilots: an eighth (warm-up), a half and the whole fold; every model full, the verdict model also light
    assert [[(name, light) for name, light, _ in pilot] for pilot in calls] == \
        [[("reference", False), ("t_enet", False), ("t_enet", True)]] * 2 + \
        [[("reference", False), ("t_enet", False), ("t_enet", True)]]
    assert (estimate.WARM_UP, estimate.HALF) == (1 / 8, 1 / 2)
    assert len(calls[0][0][2].fold.train) == round(len(fold.train) * estimate.WARM_UP)
    half_rows = len(calls[1][0][2].fold.train)
    assert half_rows == round(len(fold.train) * estimate.HALF)
    assert len(calls[1][0][2].fold.test) == min(len(fold.test), max(round(len(fold.test) / 2), estimate.MIN_PILOT_TEST))
    # the whole fold's full jobs are the run's own jobs, and their results come back for the run to use
    run_jobs = [j for j in jobs if j.fold.label == fold.label]
    assert [job for _, light, job in calls[2] if not light] == run_jobs
    assert set(done) == {("reference", fold.label), ("t_enet", fold.label)} and found.reused == 2
    direct = loto.run_fold(run_jobs[1], data)
    reused = done[("t_enet", fold.label)]
    assert list(reused.metrics) == list(direct.metrics)
    assert np.array_equal([v.value for v in reused.metrics.values()], [v.value for v in direct.metrics.values()],
                          equal_nan=True)
    assert reused.predictions.equals(direct.predictions)
    # each job: the whole fold's seconds scaled to the fold's own training rows by the power law through the half
    # and the whole fold (the seconds double: exponent log 2 / log(rows ratio)), plus sending the data; the
    # parts are the jobs still to run, scheduled in the run's order on 2 workers
    b = estimate.exponent(1.0, 2.0, len(fold.train) / half_rows)
    assert b == pytest.approx(1.0, abs=0.01)
    sizes = [len(f.train) for f in plan.folds]
    assert len(set(sizes)) > 1  # folds of different sizes: the median fold alone would be wrong
    cost = lambda seconds, n: seconds * (n / len(fold.train)) ** b + 0.5  # noqa: E731
    left = [cost(2.0, len(f.train)) for f in plan.folds if f.label != fold.label]
    light = [cost(4.0, n) for n in sizes]
    final = cost(2.0, data.n)  # a final refit is on every analysed row
    assert found.exponents == {"reference": round(b, 2), "t_enet": round(b, 2)}
    assert found.parts["folds"] == pytest.approx(estimate.makespan(left + left, 2))
    assert found.parts["final models"] == pytest.approx(final)  # two refits at once
    assert found.parts["verdict calibration"] == pytest.approx(estimate.makespan(light * 19, 2))
    assert found.parts["verdict calibration"] >= 19 * sum(light) / 2
    assert found.seconds == pytest.approx(sum(found.parts.values()))
    assert found.by_model["t_enet"] == pytest.approx(sum(left) + cost(2.0, len(fold.train)) + final + 19 * sum(light))
    assert found.dominant == "t_enet"
    assert found.rows == data.n and found.folds == len(plan.folds) and found.workers == 2 and found.peak_bytes > 0
    line = found.line()
    assert line.startswith("estimated ") and "GiB" in line and "mostly t_enet" in line and "\n" not in line
    assert ("dask" in line) == (found.seconds > 600)


def test_a_run_that_would_not_fit_in_memory_is_not_piloted_on_the_whole_fold(prepared, monkeypatch):
    """The half pilots' peaks, extrapolated, already exceed the limit: the whole-fold pilots (as large as a run's
    worker) are not run, the time is the half pilots' in proportion to the rows, nothing is handed back."""
    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    calls = []
    _timed_pilots(monkeypatch, 1.0, 2.0, calls)
    found, done = estimate.estimate_run(_config(), data, plan, workers=2, verdict_models=["t_enet"], null_B=19,
                                        final_models=False, memory_limit=1024.0, in_process=True)
    assert len(calls) == 2 and done == {} and found.reused == 0 and found.peak_bytes > 1024
    fold = estimate.representative_folds(plan)[0]
    half_rows = len(calls[1][0][2].fold.train)
    left = [1.0 * len(f.train) / half_rows + 0.5 for f in plan.folds]
    assert found.parts["folds"] == pytest.approx(estimate.makespan(left + left, 2))
    assert found.exponents == {"reference": 1.0, "t_enet": 1.0} and len(fold.train) > half_rows


def test_a_tuned_model_scales_its_half_pilot_s_tuning_by_the_trials_but_sends_the_data_once(prepared, monkeypatch):
    """The half pilot tunes with `PILOT_TUNING_TRIALS` trials, the whole fold is the run's own job (8 trials): the
    half pilot's tuning time (0.2 of its 1 s) is scaled by 8/2 before the exponent is fitted, its final fit and
    metrics are not; the data are sent once per job."""
    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    calls = []
    _timed_pilots(monkeypatch, 1.0, 1.0, calls, tuning=0.2)
    config = parse_config({"experiment": "t", "data": {"simulate": {}}, "outcome": "distress_fu1_6", "seed": 4,
                           "models": [{"name": "enet", "estimator": "elastic_net", "tuning": {"n_trials": 8}}],
                           "validation": {"bootstrap": 20}})
    found, done = estimate.estimate_run(config, data, plan, workers=1, verdict_models=[], null_B=0,
                                        final_models=False, in_process=True)
    assert calls[1][0][2].model.tuning.n_trials == estimate.PILOT_TUNING_TRIALS
    assert calls[2][0][2].model.tuning.n_trials == 8
    fold = estimate.representative_folds(plan)[0]
    half_rows = len(calls[1][0][2].fold.train)
    scaled_half = 1.0 + 0.2 * (8 / estimate.PILOT_TUNING_TRIALS - 1)  # 1.6 s: tuning 0.8 s, the rest 0.8 s
    b = estimate.exponent(scaled_half, 2.0, len(fold.train) / half_rows)
    assert 0.3 < b < 0.4  # scaling the whole half pilot by 8/2 (4 s, slower than the whole fold) would clip at 0.3
    assert found.exponents == {"enet": round(b, 2)}
    per_job = [2.0 * (len(f.train) / len(fold.train)) ** b + 0.5 for f in plan.folds if f.label != fold.label]
    assert found.parts["folds"] == pytest.approx(sum(per_job))  # one worker: one job after the other


def test_real_pilots_give_a_positive_finite_estimate(prepared, monkeypatch):
    data, plan = prepared
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    found, done = estimate.estimate_run(_config(), data, plan, workers=1, verdict_models=[], null_B=0,
                                        final_models=False, in_process=True)
    assert np.isfinite(found.seconds) and found.seconds > 0 and len(done) == 2
    assert found.parts["verdict calibration"] == 0 and found.parts["final models"] == 0
    assert set(found.exponents) == {"reference", "t_enet"}
    assert all(0.3 <= b <= 1.5 for b in found.exponents.values())


def test_the_representative_folds_are_the_median_and_its_neighbours_in_size(prepared):
    _, plan = prepared
    by_size = [f.label for f in sorted(plan.folds, key=lambda f: len(f.train))]
    middle = (len(by_size) - 1) // 2
    labels = lambda folds: [f.label for f in folds]  # noqa: E731
    assert labels(estimate.representative_folds(plan, 1)) == [by_size[middle]] == \
        labels([estimate.representative_folds(plan)[0]])
    assert labels(estimate.representative_folds(plan, 3)) == [by_size[middle], by_size[middle + 1],
                                                             by_size[middle - 1]]
    assert len(estimate.representative_folds(plan, 99)) == len(plan.folds)


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
    found, done = estimate.estimate_run(_config(), data, plan, workers=2, verdict_models=["t_enet"], null_B=3,
                                        final_models=True)
    from joblib import cpu_count

    copies = min(2, cpu_count())
    assert pools == [copies]  # one pool for both stages
    assert np.isfinite(found.seconds) and all(v > 0 for v in found.parts.values()) and found.peak_bytes > 0
    # each process ran the run's own jobs of its fold: the median fold and the next larger
    assert {label for _, label in done} == {f.label for f in estimate.representative_folds(plan, copies)}
    assert found.reused == len(done) == 2 * copies


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


def test_the_exponent_is_a_clipped_power_law():
    assert estimate.exponent(1.0, 4.0, 4.0) == pytest.approx(1.0)
    assert estimate.exponent(1.0, 100.0, 4.0) == 1.5  # steeper than rows^1.5: clipped
    assert estimate.exponent(1.0, 1.0, 4.0) == 0.3    # flat: at least rows^0.3
    assert estimate.exponent(0.0, 1.0, 2.0) == 1.0    # no timing: in proportion to the rows


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
    limits = []

    def estimate_run(*args, memory_limit=None, **kwargs):
        limits.append(memory_limit)
        return estimate.CostEstimate(rows=data.n, folds=len(plan.folds), workers=2, seconds=100.0,
                                     peak_bytes=3 * 2**30, parts={"folds": 100.0}, by_model={"t_enet": 200.0},
                                     pilot_seconds=1.0), {}

    monkeypatch.setattr(stage, "estimate_run", estimate_run)
    inputs = RunInputs(_config(), None, data, plan, {})
    with pytest.raises(ConfigError, match=r"data too large .* estimated 2 min of fitting and 3\.0 GiB peak memory"):
        stage.estimate(inputs, 2, loto.make_jobs(inputs.config, plan), final_models=False)
    assert limits == [1024.0]  # the pilots are told the limit, so they stop before the whole fold
    assert stage.estimate(RunInputs(_config(validation={"estimate": False}), None, data, plan, {}), 2, [],
                          final_models=False) == (None, {})


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


@pytest.fixture
def pool_shutdowns(monkeypatch):
    """``kill_workers`` of every shutdown of a loky pool, the shutdowns themselves still made."""
    from joblib.externals.loky import ProcessPoolExecutor

    shut = []
    real_shutdown = ProcessPoolExecutor.shutdown

    def shutdown(self, wait=True, kill_workers=False):
        shut.append(kill_workers)
        return real_shutdown(self, wait=wait, kill_workers=kill_workers)

    monkeypatch.setattr(ProcessPoolExecutor, "shutdown", shutdown)
    return shut


def _interrupt_soon() -> None:
    """Ctrl-C to this process in 3 s."""
    import threading

    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_an_interrupted_pilot_is_ended_not_waited_for(prepared, monkeypatch, pool_shutdowns):
    """Ctrl-C while the pilots run in their worker: the worker is killed at once (a 1M pilot takes minutes)."""
    import time

    data, plan = prepared
    monkeypatch.setattr(estimate, "time_pilots", _sleep_then_time)
    start = time.monotonic()
    _interrupt_soon()  # Ctrl-C while the pilot runs
    with pytest.raises(KeyboardInterrupt), estimate.pilot_processes(1, 1) as run:
        run([[([], estimate.subset(data, np.arange(10)))]])
    assert pool_shutdowns == [True] and time.monotonic() - start < 30


def test_an_interrupt_in_the_second_stage_of_the_pilots_ends_them_too(prepared, monkeypatch, pool_shutdowns):
    """The whole-fold pilots run as a second stage in the same processes: Ctrl-C there kills them as in the first."""
    import time

    data, plan = prepared
    monkeypatch.setattr(estimate, "time_pilots", _sleep_when_kept)
    pilots = [[([], estimate.subset(data, np.arange(10)))]]
    with pytest.raises(KeyboardInterrupt), estimate.pilot_processes(1, 1) as run:
        assert run(pilots) == [[]]  # the first stage ends
        start = time.monotonic()
        _interrupt_soon()  # Ctrl-C in the second
        run(pilots, keep=True)
    assert pool_shutdowns == [True] and time.monotonic() - start < 30


def _sleep_then_time(pilots, threads=None, keep=False):
    import time

    time.sleep(120)
    return []


def _sleep_when_kept(pilots, threads=None, keep=False):
    """The first stage returns at once, the second (``keep``: the whole fold) takes minutes."""
    import time

    if keep:
        time.sleep(120)
    return []


def test_the_whole_fold_peak_is_projected_from_the_jobs_working_memory_and_the_whole_data(prepared):
    """The warm-up and the half pilot ran in one task holding both subsets: only the jobs' working memory grows
    between their peaks; the whole fold holds the whole data instead of the two subsets."""
    data, plan = prepared
    fold = estimate.representative_folds(plan)[0]
    pilots = [([], estimate.subset(data, estimate.pilot_fold(fold, f, 1)[0])) for f in (estimate.WARM_UP, estimate.HALF)]
    held = sum(p[1].__sizeof__() for p in pilots)
    assert data.__sizeof__() > held > 0
    projected = estimate.whole_fold_peak(1_000_000.0, 1_300_000.0, pilots, data)
    assert projected == pytest.approx(1_300_000 + 300_000 / (3 / 8) / 2 + data.__sizeof__() - held)
    # a smaller half peak than the warm-up's (noise): no negative working memory
    assert estimate.whole_fold_peak(1_300_000.0, 1_000_000.0, pilots, data) == \
        pytest.approx(1_000_000 + data.__sizeof__() - held)
