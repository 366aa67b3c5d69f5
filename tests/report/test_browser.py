"""The study report and a model card in a real browser (headless Chromium, Debian's `chromium` package, installed by
.ci/run when absent): they load without console errors or failed loads, every image is present and decodes, the
contents' links land, nothing is fetched from elsewhere, and on a phone-sized screen the page does not scroll
sideways."""

from __future__ import annotations

import pytest
from chromium import find_chromium, load_page
from test_study_report import study_run  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    return binary


def _check(page: dict, *, images: int) -> None:
    assert page["errors"] == [], page["errors"]
    assert len(page["images"]) >= images
    assert all(image["ok"] and image["width"] > 0 and image["height"] > 0 for image in page["images"]), \
        [image for image in page["images"] if not image["ok"]]
    assert page["broken_anchors"] == []
    assert page["external"] == []


def test_study_report_renders_in_chromium(chromium, study_run, tmp_path):  # noqa: F811
    from mbi_predict.report.study import write_study_report

    html_path, _ = write_study_report(study_run, tmp_path / "study_report")
    _check(load_page(chromium, html_path), images=6)
    phone = load_page(chromium, html_path, width=390)
    _check(phone, images=6)
    assert phone["scroll_width"] <= 392   # tables scroll inside their box; the page does not


def test_model_card_renders_in_chromium(chromium, study_run, tmp_path):  # noqa: F811
    from mbi_predict.report.card import build_card, write_card

    for model in ("elastic_net", "cf"):
        path = write_card(build_card(study_run, model=model), tmp_path / f"card_{model}.html", fmt="html")
        _check(load_page(chromium, path), images=1)
