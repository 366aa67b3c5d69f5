"""The demo's meta-analysis stage computes its three analyses in the worker pool the experiment then reuses: the
files it writes are those of the same analyses computed in this process, and the workers write nothing."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.demo import _meta_analysis, _meta_stage
from mbi_predict.io import to_json
from mbi_predict.meta import run_meta


def test_the_pooled_meta_stage_writes_what_an_in_process_analysis_writes(tmp_path):
    ipd = simulate_latent("galante2023", seed=2023).ipd
    written = _meta_stage(ipd, tmp_path / "meta", Console(file=io.StringIO()))
    folders = sorted(p.name for p in (tmp_path / "meta").iterdir())
    # the simulator's table has no deterioration outcome (harmonisation derives it): that analysis is skipped
    assert folders == ["distress_fu1_6_vs_active", "distress_fu1_6_vs_passive"]
    assert {path.name for path in written.values()} == {"forest.png"}
    for folder in folders:
        assert sorted(p.name for p in (tmp_path / "meta" / folder).iterdir()) == ["forest.png", "funnel.png",
                                                                                "meta.json"]
    expected = run_meta(ipd, "distress_fu1_6", control="passive",
                        modifiers=["baseline_distress", "baseline_mindfulness", "age"], m=5, seed=0)
    on_disk = json.loads((tmp_path / "meta" / "distress_fu1_6_vs_passive" / "meta.json").read_text())
    assert on_disk == json.loads(to_json(expected.to_dict()))
    # a worker's job returns the report and writes nothing
    report = _meta_analysis(ipd, "distress_fu1_6", "active", None)
    assert report.two_stage.pooled is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta"]
