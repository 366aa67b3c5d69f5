"""run_experiment takes the IPD table as a DataFrame (no file, no data block needed) with the same results."""

from __future__ import annotations

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.runner import run_experiment


def test_dataframe_input_gives_the_same_results_as_the_simulated_source(make_config, tmp_path):
    config = make_config(models=[{"name": "reference", "estimator": "reference"},
                                 {"name": "elastic_net", "estimator": "elastic_net"}])
    from_config = run_experiment(config, out_dir=tmp_path / "a", progress=False).summary
    simulate = config["data"]["simulate"]
    frame = simulate_latent(simulate["scenario"], seed=simulate["seed"], n_trials=simulate["n_trials"],
                            n=simulate["n"]).ipd
    without_data = {key: value for key, value in config.items() if key != "data"}
    from_frame = run_experiment(without_data, data=frame, out_dir=tmp_path / "b", progress=False).summary
    assert from_frame["data"]["source"] == "dataframe"
    assert from_frame["data"]["sha256"] == from_config["data"]["sha256"]
    for model in ("reference", "elastic_net"):
        assert from_frame["models"][model]["pooled"] == from_config["models"][model]["pooled"]
