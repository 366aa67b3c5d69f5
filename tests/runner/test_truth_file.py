"""A table given by path can carry a separate truth file (`data.truth`): scored, never a model input."""

from __future__ import annotations

import pytest

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import MBIError
from mbi_predict.runner import run_experiment


def test_truth_file_beside_a_table_gives_pehe(make_config, tmp_path):
    sim = simulate_latent("strong", seed=8, n_trials=5, n=900)
    sim.ipd.to_parquet(tmp_path / "ipd.parquet")
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)
    config = make_config(
        data={"path": str(tmp_path / "ipd.parquet"), "truth": str(tmp_path / "truth.csv")},
        models=[{"name": "t_learner_enet", "kind": "effect", "estimator": "t_learner_enet"}],
    )
    summary = run_experiment(config, out_dir=tmp_path / "run", progress=False).summary
    rows = summary["models"]["t_learner_enet"]["per_trial"]
    assert all("pehe" in row and row["pehe"] >= 0 for row in rows)
    assert summary["models"]["t_learner_enet"]["pooled"]["cate_truth_corr"]["estimate"] > 0.5
    assert "true_effect_passive_distress_fu1_6" not in summary["covariates"]


def test_unreadable_truth_file_is_one_line(make_config, tmp_path):
    sim = simulate_latent("null", seed=8, n_trials=4, n=500)
    sim.ipd.to_parquet(tmp_path / "ipd.parquet")
    (tmp_path / "truth.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    config = make_config(data={"path": str(tmp_path / "ipd.parquet"), "truth": str(tmp_path / "truth.csv")})
    with pytest.raises(MBIError, match="truth.csv.*trial_id"):
        run_experiment(config, out_dir=tmp_path / "run", progress=False)
