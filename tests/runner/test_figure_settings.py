"""The run's figures follow the config's ``figures:`` block, and ``mbi-predict run --figure-format/--dpi`` override it:
forest plots, calibration for benefit and SHAP figures (drawn in the plotting workers and by the explain step) are
all written in the asked format (PNG read back for its resolution, SVG and PDF by their header). A bad value in the
block is a one-line error (exit 2) before anything runs."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mbi_predict import figstyle
from mbi_predict.cli import app
from mbi_predict.runner import run_experiment

pytest.importorskip("mbi_predict.models.effect")

runner = CliRunner()
#: the figures each kind of model writes that this test reads: forest plots (every model), calibration for benefit
#: and SHAP (the effect model, explained on its own)
KINDS = ("forest_", "benefit-calibration_", "shap_")


def _config(make_config, figures=None):
    config = make_config(
        experiment="figure_settings",
        data={"simulate": {"scenario": "strong", "seed": 2, "n_trials": 4, "n": 500}},
        models=[{"name": "reference", "estimator": "reference"},
                {"name": "t_enet", "kind": "effect", "estimator": "t_learner_enet",
                 "explain": {"enabled": True, "max_rows": 40, "max_background": 20, "null_B": 0,
                             "dependence_top": 1}}],
        validation={"bootstrap": 10, "n_jobs": 2}, heterogeneity={"calibration": "none"})
    if figures is not None:
        config["figures"] = figures
    return config


def _check_figures(plots, fmt: str, dpi: int | None = None) -> None:
    """Every figure under ``plots`` is a ``fmt`` file (one of each kind at least); PNGs declare ``dpi``."""
    files = sorted(plots.iterdir())
    assert {path.suffix for path in files} == {f".{fmt}"}
    for kind in KINDS:
        assert [path for path in files if path.name.startswith(kind)], f"no {kind} figure in {plots}"
    assert {"shap_t_enet_importance", "shap_t_enet_beeswarm", "shap_t_enet_benefit-profile"} <= {
        path.stem for path in files}
    for path in files:
        data = path.read_bytes()
        if fmt == "png":
            with Image.open(path) as image:
                assert image.format == "PNG"
                assert image.info["dpi"] == pytest.approx((dpi, dpi), abs=0.1), path.name  # pixels per metre
            assert figstyle.png_dpi(data) == pytest.approx(dpi, abs=0.1)
        elif fmt == "svg":
            assert data.lstrip().startswith(b"<?xml") and b"<svg" in data[:2000], path.name
        else:
            assert data.startswith(b"%PDF-"), path.name


def _run_cli(tmp_path, config: dict, *options: str):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--no-progress", *options])


def test_the_config_block_sets_format_and_dpi(tmp_path, make_config):
    result = run_experiment(_config(make_config, {"format": "png", "dpi": 200}), out_dir=tmp_path, progress=False)
    _check_figures(tmp_path / "plots", "png", 200)
    assert result.summary["config"]["figures"] == {"format": "png", "dpi": 200}   # recorded with the run


def test_the_config_block_through_the_cli(tmp_path, make_config):
    done = _run_cli(tmp_path, _config(make_config, {"format": "pdf", "dpi": 300}))
    assert done.exit_code == 0, done.output
    _check_figures(tmp_path / "out" / "plots", "pdf")


def test_the_cli_options_override_the_config_block(tmp_path, make_config):
    done = _run_cli(tmp_path, _config(make_config, {"format": "svg", "dpi": 300}), "--figure-format", "png",
                    "--dpi", "120")
    assert done.exit_code == 0, done.output
    _check_figures(tmp_path / "out" / "plots", "png", 120)
    recorded = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))["config"]["figures"]
    assert recorded == {"format": "png", "dpi": 120}   # what the figures were drawn with


def test_without_a_block_the_config_is_recorded_as_before(make_config):
    """The default block is left out of the dumped config (summary.json, MLflow params): runs without it keep
    their recorded config (and the pinned run its keys)."""
    from mbi_predict.config import flatten_config, parse_config

    config = parse_config(_config(make_config))
    assert config.figures.settings() == figstyle.FigureSettings("png", 150)
    assert "figures" not in config.model_dump(mode="json")
    assert not [key for key in flatten_config(config) if key.startswith("figures")]
    chosen = parse_config(_config(make_config, {"format": "SVG"}))
    assert chosen.model_dump(mode="json")["figures"] == {"format": "svg", "dpi": 150}
    assert parse_config(chosen.model_dump(mode="json")).figures == chosen.figures   # survives the round trip


@pytest.mark.parametrize("figures,needle", [
    ({"format": "gif"}, "figures.format: must be one of png, svg, pdf, not 'gif'"),
    ({"dpi": 20}, "figures.dpi: must be between 50 and 1200, not 20"),
    ({"dpi": "high"}, "figures.dpi: must be a whole number of dots per inch"),
    ({"dpi": 150.5}, "figures.dpi: must be a whole number of dots per inch"),
    ({"colour": "red"}, "figures.colour"),
])
def test_a_bad_figures_block_is_one_line_exit_2(tmp_path, make_config, figures, needle):
    done = _run_cli(tmp_path, _config(make_config, figures))
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.output, done.output
    assert not (tmp_path / "out").exists()
