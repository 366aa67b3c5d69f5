"""Same seed, same results: a fresh run of the pinned config gives the numbers in ``data/pinned_summary.json``
(rtol 1e-9) and the same keys everywhere. See ``pinned_run.py`` for what is compared and how to regenerate the
pinned file after a deliberate change of results (``MBI_REGEN_PINNED=1`` or ``pinned_run.py --regen``)."""

from __future__ import annotations

import json

from pinned_run import PINNED, REGEN_ENV, differences


def test_a_fresh_run_gives_the_pinned_numbers(pinned_summary):
    expected = json.loads(PINNED.read_text(encoding="utf-8"))
    found = differences(expected, pinned_summary)
    assert not found, (f"{len(found)} differences from {PINNED.name} (regenerate with {REGEN_ENV}=1 only if the "
                       "change of results is deliberate):\n" + "\n".join(found[:40]))


def test_the_comparison_sees_a_changed_number_and_a_changed_key():
    expected = {"a": {"b": [1.0, 2.0], "timing": {"fit_seconds": 1.0}}, "created": "x"}
    assert differences(expected, {"a": {"b": [1.0, 2.0], "timing": {"fit_seconds": 9.0}}, "created": "y"}) == []
    assert differences(expected, {"a": {"b": [1.0, 2.0 + 1e-6], "timing": {}}, "created": "x"}) == \
        [".a.b[1]: 2.000001, pinned 2.0"]
    assert differences(expected, {"a": {"b": [1.0, 2.0], "timing": {}, "c": 1}, "created": "x"}) == \
        [".a.c: unexpected new key"]
    assert differences(expected, {"a": {"b": [1.0], "timing": {}}, "created": "x"}) == [".a.b: 1 items, pinned 2"]
    assert differences({"n": 1, "s": "x"}, {"n": True, "s": "y"}) == [".n: True, pinned 1", ".s: 'y', pinned 'x'"]
