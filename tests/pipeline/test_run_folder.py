"""The run folder holds one run's outputs: publishing replaces a previous run's summary, figures and predictions
as a set (issue 13: a re-run into the same --out kept the old run's plots, and the card showed them)."""

from pathlib import Path

import pytest

from mbi_predict.pipeline.sinks import run_folder


def stage(staging: Path, plots: list[str], predictions: bool, text: str) -> None:
    (staging / "plots").mkdir()
    for name in plots:
        (staging / "plots" / name).write_text(text)
    if predictions:
        (staging / run_folder.PREDICTIONS).write_text(text)
    (staging / run_folder.SUMMARY).write_text(text)


def test_a_second_run_into_the_same_folder_leaves_only_its_own_outputs(tmp_path):
    out = tmp_path / "run"
    with run_folder.staging_folder(out) as staging:
        stage(staging, ["forest_old_model.png", "shared.png"], True, "first")
        run_folder.publish(staging, out)
    with run_folder.staging_folder(out) as staging:
        stage(staging, ["forest_new_model.png", "shared.png"], False, "second")
        published = run_folder.publish(staging, out)
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["forest_new_model.png", "shared.png"]
    assert [p.name for p in published] == ["forest_new_model.png", "shared.png"]
    assert (out / "plots" / "shared.png").read_text() == "second"
    assert not (out / run_folder.PREDICTIONS).exists()  # participant-level rows of the old run: gone
    assert (out / run_folder.SUMMARY).read_text() == "second"
    assert sorted(p.name for p in out.iterdir()) == ["plots", "summary.json"]  # no staging folder left


def test_a_failed_run_leaves_no_folder_it_created_and_keeps_a_previous_run(tmp_path):
    fresh = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError), run_folder.staging_folder(fresh) as staging:
        stage(staging, ["x.png"], False, "partial")
        raise RuntimeError("failed while logging")
    assert not (tmp_path / "a").exists()

    kept = tmp_path / "kept"
    with run_folder.staging_folder(kept) as staging:
        stage(staging, ["x.png"], False, "first")
        run_folder.publish(staging, kept)
    with pytest.raises(KeyboardInterrupt), run_folder.staging_folder(kept) as staging:
        stage(staging, ["y.png"], False, "second")
        raise KeyboardInterrupt
    assert (kept / run_folder.SUMMARY).read_text() == "first"
    assert sorted(p.name for p in kept.iterdir()) == ["plots", "summary.json"]


def test_a_staging_folder_of_a_killed_process_is_removed_by_the_next_run(tmp_path):
    from mbi_predict.io import staging_prefix

    out = tmp_path / "run"
    out.mkdir()
    dead = out / (staging_prefix().rsplit(".", 2)[0] + ".999999999.abc")  # this host, a pid that cannot run
    dead.mkdir()
    with run_folder.staging_folder(out) as staging:
        assert not dead.exists() and staging.exists()
