"""How leave-one-trial-out validation scales with participants and trials.

    .venv/bin/python experiments/benchmarks/scaling.py [--quick] [--sizes 240000] [--trials 50] [--models ...]

For each (participants, trials) cell: simulate the consortium (``simulate_latent('galante2023')``, timed), prepare
the data once (``validate.loto.prepare_data``), plan folds, and run each model's fold jobs through
``validate.loto.run_jobs`` (``validation.n_jobs`` workers, joblib/loky, tracking off, no tuning), exactly as the
runner does. Then capped SHAP for the xgboost and T-learner models (500 held-out rows, 100 training rows as
background, per fold). Reported per model: wall seconds, PEHE against the simulator's truth (effect models), and
per cell the peak resident memory of the whole process tree (main + joblib workers, sampled every 0.2 s with
psutil; falls back to ``ru_maxrss`` of self/children without psutil).

Each cell runs in a fresh subprocess so peak memory is that cell's own.

Folds: leave-one-trial-out. With >= 500k participants the folds are 10 groups of whole trials (``GroupKFold`` over
trial ids, built here as a ``FoldPlan``: the runner's ``validation.scheme: kfold`` splits participants, not
trials, so it is not the grouped scheme the issue asks for). Inside each fold, cross-fitting still groups by the
real trials.

Backend: ``--backend dask`` runs the fold jobs on a ``distributed.LocalCluster`` of ``--n-jobs`` worker processes
through the runner's ``validation.backend: dask`` switch (the data are scattered to the workers once); the default
is the runner's local loky workers.

Models: ``xgboost`` (prognostic, family defaults, no tuning), ``t_learner_xgb`` and ``causal_forest`` (toolkit
defaults). The causal forest runs on at most ``--cf-max-folds`` folds at >= 240k participants (default 2) and its
time is extrapolated linearly to all folds (marked ``extrapolated``); issue 18's full run is
``--sizes 240000 --trials 50 --models causal_forest --cf-max-folds 1000 --no-shap`` (every fold run).

Cells with fewer than 100 participants per trial on average (2.4k in 50 or 200 trials) cannot be simulated (every
trial needs >= 40 and sizes are log-normal) and are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GIB, TreeMemory, machine, peak_rss_bytes, provenance, table  # noqa: E402

SIZES = (2_400, 24_000, 240_000, 1_000_000)
TRIALS = (13, 50, 200)
QUICK_SIZES = (2_400, 24_000)
MODELS = ("xgboost", "t_learner_xgb", "causal_forest")
GROUPED_FROM = 500_000
MIN_MEAN_TRIAL_SIZE = 100  # simulate_latent draws log-normal trial sizes with a floor of 40
N_GROUPS = 10
OUTCOME = "distress_fu1_6"
TRUTH = "true_effect_passive_distress_fu1_6"
TARGETS = {(240_000, 50): (600.0, 8.0), (1_000_000, 50): (1800.0, 16.0), (1_000_000, 200): (1800.0, 16.0),
           (1_000_000, 13): (1800.0, 16.0)}


def cate_column(predictions) -> np.ndarray:
    """Predicted CATE of a fold (the column was renamed from ``predicted_effect`` to ``cate``)."""
    column = "cate" if "cate" in predictions else "predicted_effect"
    return predictions[column].to_numpy(dtype=float)


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, its threads and its live and reaped children."""
    try:
        import psutil
    except ImportError:
        return time.process_time()
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system (reaped)
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except Exception:  # noqa: BLE001 - it may have exited
            pass
    return total


def config_for(models: list[str], n_jobs: int, bootstrap: int, seed: int) -> dict:
    specs = []
    for name in models:
        if name == "xgboost":
            specs.append({"name": "xgboost", "kind": "prognostic", "estimator": "xgboost"})
        else:
            specs.append({"name": name, "kind": "effect", "estimator": name})
    return {"experiment": "scaling", "data": {"simulate": {"scenario": "galante2023"}}, "outcome": OUTCOME,
            "covariates": "all", "models": specs,
            "validation": {"n_jobs": n_jobs, "bootstrap": bootstrap, "min_trial_size": 20},
            "tracking": {"enabled": False}, "seed": seed}


def grouped_plan(plan, data, n_groups: int):
    """The LOTO plan's trials dealt into ``n_groups`` folds of whole trials (GroupKFold balances their sizes)."""
    from sklearn.model_selection import GroupKFold

    from mbi_predict.validate.loto import Fold, FoldPlan

    folds = []
    for k, (train, test) in enumerate(GroupKFold(n_splits=n_groups).split(data.X, data.y, data.trial)):
        folds.append(Fold(f"group_{k + 1:02d}", np.asarray(train), np.asarray(test)))
    note = f"{n_groups} folds of whole trials (benchmark grouping of leave-one-trial-out)"
    return FoldPlan("grouped_trials", tuple(folds), plan.skipped, note, plan.trials)


def shap_seconds(result, data, n_rows: int = 500) -> float:
    """Capped SHAP of one fold's fitted model: <= n_rows held-out rows, 100 training rows as background."""
    from mbi_predict.models.preprocess import make_preprocessor

    start = time.perf_counter()
    test = result.test_rows
    train = np.setdiff1d(np.arange(data.n), test)
    if result.kind == "prognostic":
        from mbi_predict.explain.prognostic import explain_pipeline

        explain_pipeline(result.fitted_model, data.X.iloc[test], background=data.X.iloc[train],
                         max_rows=n_rows, max_background=100, seed=0)
    else:
        from mbi_predict.explain.effect_shap import explain_effect

        # the fold's own covariate transformer (deterministic: simple imputation + scaling + one-hot)
        observed = train[np.isfinite(data.y[train])]
        features = make_preprocessor(data.features, use_arm=False).fit(data.X.iloc[observed])
        rng = np.random.default_rng(0)
        bg = rng.choice(observed, size=min(1000, len(observed)), replace=False)
        explain_effect(result.fitted_model, features.transform(data.X.iloc[test]),
                       background=features.transform(data.X.iloc[bg]), max_rows=n_rows, max_background=100, seed=0)
    return time.perf_counter() - start


@contextmanager
def fold_backend(backend: str, n_jobs: int):
    """Where `run_jobs` sends the fold jobs; yields the ``n_jobs`` to give it. ``local``: loky workers, as the
    runner's default. ``dask``: a ``distributed.LocalCluster`` of ``n_jobs`` single-threaded worker processes,
    reached through the runner's own switch (`mbi_predict.parallel.execution_backend`, i.e.
    ``validation.backend: dask``); joblib's dask backend scatters the prepared data to the workers once per model
    and sends only the fold jobs. One backend serves every model of a cell; the cluster's start-up is timed apart
    (``backend_start_seconds``) and counted in the cell's total."""
    if backend == "local":
        yield n_jobs
        return
    from distributed import Client, LocalCluster

    from mbi_predict.parallel import execution_backend

    with LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client, \
            execution_backend("dask", client) as jobs:
        yield jobs


def run_cell(n: int, n_trials: int, models: list[str], n_jobs: int, bootstrap: int, cf_max_folds: int,
             shap: bool, seed: int, fast_concordance: bool = False, max_folds: int | None = None,
             backend: str = "local") -> dict:
    from mbi_predict.config import parse_config
    from mbi_predict.data.schema import check_ipd
    from mbi_predict.data.simulate import simulate_latent
    from mbi_predict.validate.loto import make_jobs, plan_folds, prepare_data, run_jobs

    out: dict = {"participants": n, "trials": n_trials, "n_jobs": n_jobs, "bootstrap": bootstrap, "models": {},
                 "fast_concordance": fast_concordance, "backend": backend}
    with TreeMemory() as memory:
        start = time.perf_counter()
        consortium = simulate_latent("galante2023", seed=seed, n_trials=n_trials, n=n)
        frame = check_ipd(consortium.ipd)
        out["simulate_seconds"] = time.perf_counter() - start
        truth = consortium.truth.set_index("participant_id")[TRUTH]
        del consortium

        start = time.perf_counter()
        config = parse_config(config_for(models, n_jobs, bootstrap, seed))
        data = prepare_data(frame, outcome=OUTCOME, covariates="all", control_type="passive")
        del frame
        plan = plan_folds(data, scheme="loto", min_trial_size=20, seed=seed)
        if n >= GROUPED_FROM:
            plan = grouped_plan(plan, data, N_GROUPS)
        out["prepare_seconds"] = time.perf_counter() - start
        out["folds"] = len(plan.folds)
        out["scheme"] = plan.scheme
        out["analysed_participants"] = data.n

        start = time.perf_counter()
        with fold_backend(backend, n_jobs) as workers:   # one backend (for Dask: one cluster) per cell
            out["backend_start_seconds"] = time.perf_counter() - start
            for spec in config.models:
                jobs = [j for j in make_jobs(config, plan, keep_models=shap) if j.model.name == spec.name]
                extrapolated = False
                if spec.estimator == "causal_forest" and n >= 240_000 and len(jobs) > cf_max_folds:
                    jobs, extrapolated = jobs[:cf_max_folds], True
                if max_folds and len(jobs) > max_folds:
                    jobs, extrapolated = jobs[:max_folds], True
                start, cpu_start = time.perf_counter(), tree_cpu_seconds()
                if fast_concordance:  # run_jobs' loop, with the O(n log n) concordance patched into each worker
                    from joblib import Parallel, delayed

                    from fast_concordance import patch, patched_run_fold
                    patch()
                    results = (list(Parallel(n_jobs=n_jobs)(delayed(patched_run_fold)(job, data) for job in jobs))
                               if n_jobs != 1 else [patched_run_fold(job, data) for job in jobs])
                else:
                    results = run_jobs(jobs, data, n_jobs=workers)
                seconds = time.perf_counter() - start
                cpu = tree_cpu_seconds() - cpu_start
                row = {"seconds": seconds * (len(plan.folds) / len(jobs)), "folds_run": len(jobs),
                       "cpu_seconds": cpu * (len(plan.folds) / len(jobs)),
                       "extrapolated": extrapolated,
                       "fit_seconds": float(sum(r.timing["fit_seconds"] for r in results)),
                       "predict_seconds": float(sum(r.timing["predict_seconds"] for r in results))}
                if spec.kind == "effect":
                    predicted = np.concatenate([cate_column(r.predictions) for r in results])
                    ids = np.concatenate([r.predictions["participant_id"].to_numpy() for r in results])
                    true = truth.reindex(ids).to_numpy(dtype=float)
                    from mbi_predict.validate.benefit import pehe
                    row["pehe"] = pehe(true, predicted)
                if shap and spec.estimator in ("xgboost", "t_learner_xgb"):
                    start = time.perf_counter()
                    for result in results:
                        shap_seconds(result, data)
                    row["shap_seconds"] = (time.perf_counter() - start) * (len(plan.folds) / len(jobs))
                del results
                out["models"][spec.name] = row
                print(f"  [{n} x {n_trials}] {spec.name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    out["peak_tree_rss_gib"] = memory.peak / GIB if memory.peak else None
    out["peak_self_rss_gib"] = peak_rss_bytes() / GIB
    out["wall_seconds_total"] = out["simulate_seconds"] + out["prepare_seconds"] + out["backend_start_seconds"] + sum(
        m["seconds"] + m.get("shap_seconds", 0.0) for m in out["models"].values())
    return out


def summarise(cells: list[dict]) -> None:
    rows = []
    for cell in cells:
        if "skipped" in cell:
            rows.append({"participants": cell["participants"], "trials": cell["trials"], "model": "-",
                         "note": cell["skipped"]})
            continue
        for name, m in cell["models"].items():
            rows.append({"participants": cell["participants"], "trials": cell["trials"], "folds": cell["folds"],
                         "model": name, "seconds": m["seconds"], "cpu_s": m.get("cpu_seconds", ""), "shap_s": m.get("shap_seconds", ""),
                         "pehe": m.get("pehe", ""), "peak_GiB": cell["peak_tree_rss_gib"] or "",
                         "note": "; ".join(filter(None, (
                             f"extrapolated from {m['folds_run']} folds" if m["extrapolated"] else "",
                             "local Dask cluster" if cell.get("backend") == "dask" else "")))})
    print(table(rows, ["participants", "trials", "folds", "model", "seconds", "cpu_s", "shap_s", "pehe",
                       "peak_GiB", "note"]))
    print()
    for cell in cells:
        key = (cell["participants"], cell["trials"])
        if key not in TARGETS or "skipped" in cell:
            continue
        limit_s, limit_gib = TARGETS[key]
        for label, models in (("xgboost + T-learner + SHAP", ("xgboost", "t_learner_xgb")),
                              ("causal forest (issue 18)", ("causal_forest",))):
            if not all(m in cell["models"] for m in models):
                continue
            extrapolated = any(cell["models"][m]["extrapolated"] for m in models)
            core = sum(cell["models"][m]["seconds"] + cell["models"][m].get("shap_seconds", 0.0) for m in models)
            total = core + cell["simulate_seconds"] + cell["prepare_seconds"] + cell.get("backend_start_seconds", 0.0)
            mem = cell["peak_tree_rss_gib"] or cell["peak_self_rss_gib"]
            verdict = "MET" if total <= limit_s and mem <= limit_gib else "MISSED"
            print(f"target {key[0]} participants / {key[1]} trials: {label} (+ simulate, prepare) {total:.0f} s "
                  f"(limit {limit_s:.0f}{', extrapolated' if extrapolated else ', every fold run'}), peak {mem:.2f} "
                  f"GiB (limit {limit_gib:.0f}): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_SIZES} participants")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--trials", type=int, nargs="+")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bootstrap", type=int, default=200, help="validation.bootstrap (the runner's default)")
    parser.add_argument("--cf-max-folds", type=int, default=2)
    parser.add_argument("--no-shap", action="store_true")
    parser.add_argument("--max-folds", type=int, help="run only the first K folds of every model and extrapolate "
                        "times linearly to all folds (marked 'extrapolated'); for sizes that do not fit a session")
    parser.add_argument("--fast-concordance", action="store_true",
                        help="patch the O(n log n) Harrell's C of fast_concordance.py into c-for-benefit (the "
                             "package's pairwise version is O(n^2) per bootstrap replicate)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, help="append each cell's figures to this JSON-lines file")
    parser.add_argument("--backend", choices=("local", "dask"), default="local",
                        help="where the fold jobs run: loky workers (default) or a local Dask cluster of --n-jobs "
                             "worker processes through validation.backend: dask")
    parser.add_argument("--cell", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.cell:
        result = run_cell(args.cell[0], args.cell[1], args.models, args.n_jobs, args.bootstrap, args.cf_max_folds,
                          not args.no_shap, args.seed, args.fast_concordance, args.max_folds, args.backend)
        print("CELL " + json.dumps(result))
        return

    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    trials = args.trials or TRIALS
    print(f"machine: {machine()}")
    print(f"models {args.models}; backend {args.backend}; n_jobs {args.n_jobs}; bootstrap {args.bootstrap}; shap {not args.no_shap}; "
          f"c-for-benefit concordance: O(n log n) (the package's own since the suggestion landed; --fast-concordance is now a no-op)")
    cells = []
    for n in sizes:
        for k in trials:
            if n / k < MIN_MEAN_TRIAL_SIZE:
                cells.append({"participants": n, "trials": k, "skipped": f"fewer than {MIN_MEAN_TRIAL_SIZE} "
                              "participants per trial on average: the simulator needs >= 40 in every trial"})
                continue
            command = [sys.executable, __file__, "--cell", str(n), str(k), "--models", *args.models,
                       "--n-jobs", str(args.n_jobs), "--bootstrap", str(args.bootstrap),
                       "--cf-max-folds", str(args.cf_max_folds), "--seed", str(args.seed), "--backend", args.backend]
            if args.no_shap:
                command.append("--no-shap")
            if args.fast_concordance:
                command.append("--fast-concordance")
            if args.max_folds:
                command += ["--max-folds", str(args.max_folds)]
            start, started = time.perf_counter(), provenance()
            done = subprocess.run(command, capture_output=True, text=True)
            sys.stderr.write(done.stderr[-4000:] if done.returncode else "")
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("CELL ")), None)
            if done.returncode or line is None:
                cells.append({"participants": n, "trials": k, "skipped": f"failed (exit {done.returncode})"})
                continue
            cell = json.loads(line[5:])
            cell["process_wall_seconds"] = time.perf_counter() - start
            cell["provenance"] = provenance(started)   # commit, time, load at start and end (readme_table.py)
            cells.append(cell)
            print(f"{n} participants / {k} trials: {cell['folds']} folds, simulate {cell['simulate_seconds']:.1f} s,"
                  f" prepare {cell['prepare_seconds']:.1f} s, process wall {cell['process_wall_seconds']:.0f} s,"
                  f" peak {cell['peak_tree_rss_gib'] or 0:.2f} GiB", flush=True)
            if args.json:
                with args.json.open("a") as handle:
                    handle.write(json.dumps(cell) + "\n")
    summarise(cells)


if __name__ == "__main__":
    main()
