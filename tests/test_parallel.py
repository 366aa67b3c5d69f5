"""Where fold jobs run (`mbi_predict.parallel.execution_backend`): local joblib or a Dask cluster, same results."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
from joblib import Parallel, delayed

from mbi_predict.errors import ConfigError
from mbi_predict.parallel import execution_backend

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    # threads in this process: starts in well under a second and needs no pickling to worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_backend_yields_n_jobs_within_the_cores():
    import os

    with execution_backend("local", n_jobs=3) as n_jobs:
        assert n_jobs == min(3, len(os.sched_getaffinity(0)))
    with execution_backend("local", n_jobs=1) as n_jobs:
        assert n_jobs == 1


@pytest.mark.parametrize("backend, scheduler, needle", [
    ("spark", None, "validation.backend: unknown backend 'spark'"),
    ("dask", None, "validation.scheduler: the dask backend needs a scheduler address"),
    ("dask", "", "validation.scheduler: expected a scheduler address"),
])
def test_bad_backend_or_missing_scheduler_is_one_line_config_error(backend, scheduler, needle):
    with pytest.raises(ConfigError) as info:
        with execution_backend(backend, scheduler):
            pass
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unreachable_scheduler_fails_fast_with_one_line():
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigError) as info:
        with execution_backend("dask", address, timeout=1):
            pass
    message = str(info.value)
    assert message.startswith(f"validation.scheduler: cannot reach the Dask scheduler at {address}")
    assert "\n" not in message


def test_dask_runs_joblib_calls_on_the_cluster_and_closes_what_it_opened(cluster):
    with execution_backend("dask", cluster.scheduler_address) as n_jobs:
        assert n_jobs == -1
        from joblib.parallel import get_active_backend
        assert type(get_active_backend()[0]).__name__ == "DaskDistributedBackend"
        out = Parallel(n_jobs=n_jobs)(delayed(math.sqrt)(i) for i in range(6))
        client = distributed.get_client()
    assert out == [math.sqrt(i) for i in range(6)]
    assert client.status == "closed"
    from joblib.parallel import get_active_backend
    assert type(get_active_backend()[0]).__name__ != "DaskDistributedBackend"  # the default is restored


def test_dask_with_a_client_given_leaves_it_open(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        with execution_backend("dask", client) as n_jobs:
            assert Parallel(n_jobs=n_jobs)(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
        assert client.status == "running"


def _rows(data) -> int:
    return data.n


def test_dask_scatters_the_prepared_data_once_for_all_fold_jobs(cluster):
    """joblib's dask backend scatters an argument dask sizes above 1 kB; `PreparedData.__sizeof__` reports its
    arrays, so the data go to the workers once rather than inside every fold job (the bare object is 56 bytes)."""
    import pickle
    import sys

    from dask.sizeof import sizeof

    from mbi_predict.data.schema import check_ipd
    from mbi_predict.data.simulate import simulate_latent
    from mbi_predict.validate.loto import prepare_data

    data = prepare_data(check_ipd(simulate_latent("galante2023", seed=3, n_trials=5, n=600).ipd),
                        outcome="distress_fu1_6", covariates="all", control_type="passive")
    assert sizeof(data) == sys.getsizeof(data) > 1e3
    assert 0.2 < sizeof(data) / len(pickle.dumps(data)) < 5     # the right order of magnitude
    with distributed.Client(cluster, set_as_default=False) as client:
        scattered = []
        original = client.scatter

        def spy(value, *args, **kwargs):
            scattered.append(type(value).__name__)
            return original(value, *args, **kwargs)

        client.scatter = spy
        with execution_backend("dask", client) as n_jobs:
            assert Parallel(n_jobs=n_jobs)(delayed(_rows)(data) for _ in range(6)) == [data.n] * 6
    assert scattered == ["PreparedData"]


def _small_config(**validation) -> dict:
    return {
        "experiment": "parallel_equivalence",
        "data": {"simulate": {"scenario": "galante2023", "seed": 5, "n_trials": 5, "n": 600}},
        "outcome": "distress_fu1_6",
        "models": [{"name": "reference", "kind": "prognostic", "estimator": "reference"},
                   {"name": "elastic_net", "kind": "prognostic", "estimator": "elastic_net"},
                   {"name": "t_learner_enet", "kind": "effect", "estimator": "t_learner_enet"}],
        "validation": {"bootstrap": 20, "min_trial_size": 20, **validation},
        "tracking": {"enabled": False},
        "heterogeneity": {"null_B": 5},
        "seed": 3,
    }


def _pooled_estimates(summary: dict) -> dict[tuple[str, str], float]:
    return {(model, metric): entry["estimate"] for model, block in summary["models"].items()
            for metric, entry in block["pooled"].items()}


def _pipeline_has_backend() -> bool:
    """The run's fold jobs go through `execution_backend` (in `pipeline.batch`, where the pipeline picks the
    backend for its parallel calls)."""
    import inspect

    from mbi_predict.pipeline import batch
    return "execution_backend" in inspect.getsource(batch)


@pytest.mark.skipif(not _pipeline_has_backend(), reason="the pipeline does not use execution_backend yet")
def test_dask_backend_gives_the_local_backend_summary(cluster, tmp_path):
    from mbi_predict.pipeline.run import run_experiment

    local = run_experiment(_small_config(n_jobs=1), out_dir=tmp_path / "local", progress=False).summary
    dask = run_experiment(_small_config(backend="dask", scheduler=cluster.scheduler_address),
                          out_dir=tmp_path / "dask", progress=False).summary
    assert [f for f in local["validation"]["held_out"]] == dask["validation"]["held_out"]
    assert len(local["validation"]["held_out"]) >= 3
    a, b = _pooled_estimates(local), _pooled_estimates(dask)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        if a[key] is None or (isinstance(a[key], float) and math.isnan(a[key])):
            assert b[key] is None or math.isnan(b[key]), key
        else:
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    for name in ("reference", "elastic_net", "t_learner_enet"):
        per_local = [row["trial_id"] for row in local["models"][name]["per_trial"]]
        assert per_local == [row["trial_id"] for row in dask["models"][name]["per_trial"]]


def test_optuna_studies_share_an_sqlite_storage(tmp_path):
    """``tuning.storage`` with an sqlite URL: every fold's study lands in the one database, named by
    experiment:model:fold:seed and its inputs' fingerprint, so workers on several machines could share it (with a
    server database). A second run of the same config reads the finished studies: same parameters, no new trial."""
    optuna = pytest.importorskip("optuna")
    from mbi_predict.runner import run_experiment

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # Create the schema first: two workers opening a NEW sqlite storage at once race on Optuna's schema creation
    # (IntegrityError on alembic_version, seen in about 1 run in 3). Reported; the runner should create it once.
    optuna.storages.RDBStorage(storage)
    config = _small_config(n_jobs=2)
    config["models"] = [{"name": "elastic_net", "kind": "prognostic", "estimator": "elastic_net",
                         "tuning": {"n_trials": 2}}]
    config["tuning"] = {"inner_folds": 2, "storage": storage}
    summary = run_experiment(config, out_dir=tmp_path / "out", progress=False).summary
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    held_out = summary["validation"]["held_out"]
    # experiment:model:fold:seed, then a fingerprint of the study's inputs (`models.tuning.study_fingerprint`)
    assert sorted(name.rsplit(":", 1)[0] for name in names) == \
        sorted(f"parallel_equivalence:elastic_net:{fold}:3" for fold in held_out)
    assert all(len(name.rsplit(":", 1)[1]) == 16 for name in names)
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        assert len([t for t in study.trials if t.state.name == "COMPLETE"]) >= 2
    assert np.isfinite(summary["models"]["elastic_net"]["pooled"]["rmse"]["estimate"])
    again = run_experiment(config, out_dir=tmp_path / "again", progress=False).summary
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(storage)) == names
    assert again["models"]["elastic_net"]["best_params"] == summary["models"]["elastic_net"]["best_params"]
    assert all(record["trials_before"] == 2 for record in again["models"]["elastic_net"]["tuning"].values())
    # a fixed setting of the model changed (it reaches the fingerprint through the fold job): new studies
    config["models"][0]["params"] = {"max_iter": 5000}
    changed = run_experiment(config, out_dir=tmp_path / "changed", progress=False).summary
    assert len(optuna.get_all_study_summaries(storage)) == 2 * len(names)
    assert all(record["trials_before"] == 0 for record in changed["models"]["elastic_net"]["tuning"].values())


def test_local_workers_are_capped_by_the_machine():
    """n_jobs: 1000 on a small machine used to spawn dozens of processes; local workers never exceed the cores."""
    import os

    from mbi_predict.parallel import execution_backend, local_workers

    cores = len(os.sched_getaffinity(0))
    assert local_workers(1000) == cores and local_workers(1) == 1 and local_workers(-1) == -1
    with execution_backend("local", None, 1000) as n_jobs:
        assert n_jobs == cores
