"""The demo's meta-analysis stage computes its analyses in the worker pool the experiment then reuses: the files it
writes are those of the same analyses computed in this process, and the workers' jobs write nothing."""

from __future__ import annotations

import io
import json

import numpy as np
from rich.console import Console

import mbi_predict.parallel as parallel
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.demo import _meta_analysis, _meta_stage
from mbi_predict.io import to_json
from mbi_predict.meta import run_meta


def _close(a, b, path="meta.json"):
    """JSON values equal, numbers to 1e-9 relative (worker and test process may differ in BLAS threads)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert np.isclose(a, b, rtol=1e-9, atol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_the_pooled_meta_stage_writes_what_an_in_process_analysis_writes(tmp_path, monkeypatch):
    ipd = simulate_latent("galante2023", seed=2023).ipd
    monkeypatch.setattr(parallel, "local_workers", lambda n_jobs: 2)   # a pool even on a 1-core machine
    calls = []
    real = parallel.run_in_order

    def spy(jobs, n_jobs, on_result=None):
        jobs = list(jobs)
        calls.append(([function for function, _ in jobs], n_jobs))
        return real(jobs, n_jobs, on_result)

    monkeypatch.setattr(parallel, "run_in_order", spy)
    written = _meta_stage(ipd, tmp_path / "meta", Console(file=io.StringIO()))
    # the simulator's table has no deterioration outcome (harmonisation derives it): that analysis is skipped
    assert calls == [([_meta_analysis, _meta_analysis], 2)]
    folders = sorted(p.name for p in (tmp_path / "meta").iterdir())
    assert folders == ["distress_fu1_6_vs_active", "distress_fu1_6_vs_passive"]
    assert {path.name for path in written.values()} == {"forest.png"}
    for folder in folders:
        assert sorted(p.name for p in (tmp_path / "meta" / folder).iterdir()) == ["forest.png", "funnel.png",
                                                                                "meta.json"]
    expected = run_meta(ipd, "distress_fu1_6", control="passive",
                        modifiers=["baseline_distress", "baseline_mindfulness", "age"], m=5, seed=0)
    on_disk = json.loads((tmp_path / "meta" / "distress_fu1_6_vs_passive" / "meta.json").read_text())
    _close(on_disk, json.loads(to_json(expected.to_dict())))


def test_a_meta_stage_job_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = _meta_analysis(simulate_latent("galante2023", seed=2023).ipd, "distress_fu1_6", "active", None)
    assert report.two_stage.pooled is not None
    assert list(tmp_path.iterdir()) == []
