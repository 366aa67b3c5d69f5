"""Scoring arithmetic: properties that must hold for any input, and a hand-computed reliable change example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mbi_predict.data import scoring
from mbi_predict.data.instruments import Instrument, default_registry

RANGES = st.sampled_from([(0, 3), (1, 4), (0, 4), (1, 5), (1, 6)])


@st.composite
def item_matrix(draw, allow_missing=True):
    low, high = draw(RANGES)
    n_items = draw(st.integers(1, 21))
    n_rows = draw(st.integers(1, 30))
    values = draw(arrays(np.int64, (n_rows, n_items), elements=st.integers(low, high))).astype(float)
    if allow_missing:
        mask = draw(arrays(np.bool_, (n_rows, n_items)))
        values[mask] = np.nan
    return values, low, high


@given(item_matrix())
def test_reverse_keying_is_an_involution_and_stays_in_range(data):
    items, low, high = data
    once = scoring.reverse_key(items, low, high)
    np.testing.assert_array_equal(scoring.reverse_key(once, low, high), items)
    present = np.isfinite(once)
    assert np.all((once[present] >= low) & (once[present] <= high))


@given(item_matrix(allow_missing=False), st.floats(0.05, 1.0))
def test_prorating_equals_the_plain_sum_when_no_item_is_missing(data, share):
    items, _low, _high = data
    totals, prorated = scoring.prorated_total(items, share)
    np.testing.assert_array_equal(totals, items.sum(axis=1))
    assert not prorated.any()


@given(item_matrix(), st.floats(0.05, 1.0))
def test_prorated_totals_stay_in_the_total_range_and_follow_the_share_rule(data, share):
    items, low, high = data
    n_items = items.shape[1]
    totals, prorated = scoring.prorated_total(items, share)
    answered = np.isfinite(items).sum(axis=1)
    kept = np.isfinite(totals)
    assert np.all((totals[kept] >= n_items * low - 1e-9) & (totals[kept] <= n_items * high + 1e-9))
    # kept exactly when the share of answered items reaches the rule (and at least one item is answered)
    expected_kept = (answered >= math.ceil(share * n_items - 1e-9)) & (answered > 0)
    np.testing.assert_array_equal(kept, expected_kept)
    np.testing.assert_array_equal(prorated, kept & (answered < n_items))


def test_prorating_uses_the_mean_of_present_items():
    items = np.array([[1, 2, 3, np.nan, 4], [1, np.nan, np.nan, 2, 3]], dtype=float)
    totals, prorated = scoring.prorated_total(items, 0.8)
    assert totals[0] == pytest.approx((1 + 2 + 3 + 4) / 4 * 5)
    assert np.isnan(totals[1])  # 3 of 5 = 60% < 80%
    assert prorated.tolist() == [True, False]


@given(st.sampled_from(sorted(default_registry())), st.data())
@settings(max_examples=60)
def test_scored_item_totals_stay_in_the_instrument_range(name, data):
    instrument = default_registry()[name]
    stored = np.array(data.draw(st.lists(st.integers(instrument.item_min, instrument.item_max),
                                         min_size=instrument.items, max_size=instrument.items)), dtype=float)[None, :]
    scored = scoring.apply_reverse_keying(stored, instrument.reverse_items, instrument.item_min, instrument.item_max)
    total, _ = scoring.prorated_total(scored, 0.8)
    assert instrument.total_min <= total[0] <= instrument.total_max


def test_out_of_range_ignores_missing():
    mask = scoring.out_of_range(np.array([0, 3, 4, -1, np.nan]), 0, 3)
    assert mask.tolist() == [False, False, True, True, False]


def test_rci_on_a_hand_computed_example():
    # PHQ-9-like: SD 5, reliability 0.84 -> SE = 5 * sqrt(0.16) = 2; S_diff = sqrt(2) * 2 = 2.8284
    s_diff = math.sqrt(2) * 2.0
    baseline = np.array([10.0, 10.0, 10.0, np.nan, 10.0])
    followup = np.array([16.0, 15.0, 4.0, 12.0, np.nan])
    rci = scoring.reliable_change_index(baseline, followup, sd=5.0, reliability=0.84)
    np.testing.assert_allclose(rci[:3], [6 / s_diff, 5 / s_diff, -6 / s_diff])
    np.testing.assert_allclose(rci[:3], [2.12132, 1.76777, -2.12132], atol=1e-5)
    flags = scoring.reliable_deterioration(baseline, followup, sd=5.0, reliability=0.84, higher_is_worse=True)
    # 2.12 > 1.96 -> deteriorated; 1.77 -> change not reliable; -2.12 -> reliable improvement, not deterioration
    assert flags[:3].tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(flags[3]) and np.isnan(flags[4])


def test_rci_flags_a_fall_on_a_higher_is_better_scale():
    flags = scoring.reliable_deterioration(np.array([50.0, 50.0]), np.array([40.0, 60.0]), sd=8.0,
                                           reliability=0.89, higher_is_worse=False)
    # S_diff = sqrt(2) * 8 * sqrt(0.11) = 3.752; -10 / 3.752 = -2.67 -> deteriorated; +10 -> improved
    assert flags.tolist() == [1.0, 0.0]


def test_standardise_orients_and_keeps_missing():
    z = scoring.standardise(np.array([12.0, 8.0, np.nan]), mean=10.0, sd=2.0, orientation=-1.0)
    assert z[0] == -1.0 and z[1] == 1.0 and np.isnan(z[2])


def test_baseline_reference_is_the_pooled_mean_and_sample_sd():
    mean, sd = scoring.baseline_reference(np.array([1.0, 2.0, 3.0, np.nan]))
    assert mean == 2.0 and sd == 1.0
    with pytest.raises(ValueError, match="do not vary"):
        scoring.baseline_reference(np.array([4.0, 4.0, 4.0]))


def test_orientation_flips_only_when_the_instrument_disagrees_with_its_construct():
    base = dict(items=5, item_min=0, item_max=4, reliability=0.8, reliability_source="x", norm_mean=10.0,
                norm_sd=4.0, norm_source="y")
    distress_scale = Instrument(name="D", construct="distress", higher_is_worse=True, **base)
    # a scale scored "higher = better adjustment" standing for distress must be flipped
    adjustment_scale = Instrument(name="A", construct="distress", higher_is_worse=False, **base)
    assert distress_scale.orientation() == 1.0
    assert adjustment_scale.orientation() == -1.0
    assert default_registry()["WEMWBS"].orientation() == 1.0  # wellbeing reads upwards already


def test_registry_covers_the_required_instruments_with_sources():
    registry = default_registry()
    required = {"PHQ-9", "BDI-II", "CORE-10", "GHQ-12", "K10", "PSS-10", "DASS21-D", "DASS21-A", "DASS21-S",
                "WEMWBS", "SWEMWBS", "FFMQ-15", "MAAS", "GAD-7", "HADS-A", "HADS-D", "STAI-T"}
    assert required <= set(registry)
    for instrument in registry.values():
        assert instrument.norm_source and instrument.reliability_source
        assert instrument.total_max == instrument.items * instrument.item_max
    assert {registry[n].construct for n in ("CORE-10", "GHQ-12", "K10", "DASS21")} == {"distress"}
    assert registry["PSS-10"].construct == "stress" and registry["PSS-10"].reverse_items == (4, 5, 7, 8)
